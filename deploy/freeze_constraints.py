"""Write ``Dockerfiles/constraints.txt``: exact versions of the project's runtime dependency closure.

The versions are those installed in the current environment (what ``pip freeze`` shows), restricted
to what ``pip install .`` needs on Linux x86-64 / CPython 3.11 (no ``[dev]`` extra). PyTorch and its
CUDA runtime wheels are left out on purpose: both images install ``torch==TORCH_VERSION`` from
``TORCH_INDEX_URL``, the CPU wheel index (cotd/cpu) or a CUDA one (cotd/cuda), which brings its CUDA wheels.

Usage: ``python deploy/freeze_constraints.py [--check]`` (``--check`` exits 1 if the file is stale).
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "Dockerfiles" / "constraints.txt"

# Supplied by the torch wheel index (CPU or CUDA), never pinned here.
EXCLUDED = re.compile(r"^(torch|triton|nvidia-.*|pytorch-triton.*|cuda-.*)$")
# Markers of the images: Linux, x86-64, CPython 3.11.
ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.10",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def canon(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements() -> list[Requirement]:
    """The ``[project].dependencies`` of pyproject.toml."""
    import tomllib

    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def closure() -> dict[str, str]:
    """``{canonical name: installed version}`` for the runtime closure, minus :data:`EXCLUDED`."""
    seen: dict[str, str] = {}
    todo: list[tuple[Requirement, str]] = [(r, "") for r in project_requirements()]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**ENV, "extra": extra}):
            continue
        name = canon(req.name)
        if EXCLUDED.match(name):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{req.name} is required but not installed here: run `pip install -e .` first")
        key = (name, tuple(sorted(req.extras)))
        if key in _expanded:
            continue
        _expanded.add(key)
        seen[name] = dist.version
        for sub in dist.requires or []:
            sreq = Requirement(sub)
            if sreq.marker is None:
                todo.append((sreq, ""))
                continue
            # Base requirements evaluate with extra=""; extras-only ones need one of req's extras.
            for ex in ("", *sorted(req.extras)):
                if sreq.marker.evaluate({**ENV, "extra": ex}):
                    todo.append((Requirement(str(sreq).split(";")[0]), ""))
                    break
    return dict(sorted(seen.items()))


_expanded: set[tuple[str, tuple[str, ...]]] = set()


def render(pins: dict[str, str]) -> str:
    """The constraints file text."""
    head = (
        "# Exact versions for the images: the runtime closure of pyproject.toml's dependencies,\n"
        "# as installed in the development environment. Regenerate with\n"
        "#   python deploy/freeze_constraints.py\n"
        "# torch (and its CUDA wheels) is not pinned here: both images install torch==$TORCH_VERSION\n"
        "# from $TORCH_INDEX_URL, the CPU wheel index or a CUDA one.\n"
    )
    return head + "".join(f"{n}=={v}\n" for n, v in pins.items())


def main() -> int:
    """Write or check the constraints file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file differs from the environment")
    args = ap.parse_args()
    text = render(closure())
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale: run python deploy/freeze_constraints.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({text.count(chr(10)) - 5} pins)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
