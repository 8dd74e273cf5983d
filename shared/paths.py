"""Path checks: a manifest's file path stays inside its folder; a grid's files stay under the data roots."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


class UnsafePath(ValueError):
    """A path that would read or write outside the folder it belongs to."""


def member_path(root: Path, rel: str) -> Path:
    """`root / rel` for a manifest's relative POSIX path; refuses absolute paths, `..`, and symlinked escapes."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise UnsafePath(f"file path {rel!r}: not a relative POSIX path")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", ".", "..") for part in rel.split("/")):
        raise UnsafePath(f"file path {rel!r}: must stay inside the artifact (no absolute path, no '..')")
    target = Path(root) / p
    base = Path(root).resolve()
    if not target.resolve().is_relative_to(base):
        raise UnsafePath(f"file path {rel!r}: leads outside the artifact through a symlink")
    return target


def under_roots(path: str | Path, roots: list[Path]) -> bool:
    """Whether `path` (symlinks resolved) lies inside one of `roots` (absolute, resolved)."""
    real = Path(path).expanduser().resolve()
    return any(real.is_relative_to(r) for r in roots)
