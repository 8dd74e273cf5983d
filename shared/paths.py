"""Path checks: a manifest's file path stays inside its folder; a grid's files stay under the data roots.
And `write_atomic`, for files read while they are rewritten."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
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


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it, so a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def place_folder(
    tmp: Path, dest: Path, keep: Callable[[], bool], drop_aside: Callable[[Path], bool] = lambda _: True
) -> bool:
    """Rename the finished folder `tmp` to `dest` in one step, never deleting `dest` in place.

    Where `dest` is taken and `keep()` says its content is good (another worker got there first),
    `tmp` is removed and False returned. Otherwise `dest` is first moved aside in one rename (so a
    reader never finds it half-removed), removed where `drop_aside(aside)` allows, and the rename
    tried again. True when `tmp` took the place.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        try:
            os.rename(tmp, dest)  # atomic; fails while `dest` is a non-empty folder
            return True
        except OSError:
            if keep():
                shutil.rmtree(tmp, ignore_errors=True)
                return False
        aside = tmp.with_name(f"{tmp.name}.stale-{uuid.uuid4().hex[:6]}")
        try:
            os.rename(dest, aside)
        except FileNotFoundError:  # removed meanwhile: try again
            continue
        if drop_aside(aside):
            shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"cannot put {dest} in place: other processes keep replacing it")
