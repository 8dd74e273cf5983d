"""The layering: the library part of `shared/` never imports `services/` or the orchestration layer.

`shared/orchestration/` is the top floor (it runs the services' stage code) and `shared/cli.py`
assembles the commands; everything else in `shared/` is the library the services build on.
"""

from __future__ import annotations

import ast
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
TOP = (SHARED / "orchestration", SHARED / "cli.py")
FORBIDDEN = ("services", "shared.orchestration")


def _library_modules() -> list[Path]:
    return [p for p in sorted(SHARED.rglob("*.py")) if not any(p == t or t in p.parents for t in TOP)]


def _imports(tree: ast.AST) -> list[str]:
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_library_imports_neither_services_nor_orchestration() -> None:
    modules = _library_modules()
    assert len(modules) > 20  # the walk found the library
    bad = [
        f"{p.relative_to(SHARED.parent)} imports {name}"
        for p in modules
        for name in _imports(ast.parse(p.read_text(encoding="utf-8")))
        if _forbidden(name)
    ]
    assert not bad, "\n".join(bad)
