"""Embedded mode (`cotd run`): the whole grid in-process, artifacts in a local folder.

It runs the same stage functions as the workers; a cell already done is not recomputed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from shared.artifacts import LocalStore
from shared.grid import Cell, GridSpec, expand
from shared.results import cell_row, results_doc
from shared.stages import StageResult, evaluate_stage, generate_stage, train_stage

log = logging.getLogger("cotd.run")


def _unique(cells: list[Cell], attr: str) -> list:
    seen: dict[str, object] = {}
    for c in cells:
        spec = getattr(c, attr)
        seen.setdefault(spec.key, spec)
    return list(seen.values())


def run_grid(grid: GridSpec, out: Path, echo: Callable[[str], None] = print, device: str = "auto") -> dict:
    """Run every cell of `grid`; write results.json and the report under `out`. Returns results."""
    out.mkdir(parents=True, exist_ok=True)
    store = LocalStore(out / "artifacts")
    cells = expand(grid)
    (out / "grid.json").write_text(grid.model_dump_json(indent=2))
    failed: dict[str, str] = {}  # artifact key -> reason
    counts = {"computed": 0, "cached": 0, "failed": 0}
    t0 = time.perf_counter()
    stages: list[tuple[str, str, Callable[..., StageResult], list[str]]] = [
        ("generate", "cot", generate_stage, []),
        ("train", "checkpoint", train_stage, ["cot"]),
        ("evaluate", "evaluation", evaluate_stage, ["checkpoint"]),
    ]
    echo(f"grid {grid.name}: {len(cells)} cells")
    for name, attr, fn, deps in stages:
        specs = _unique(cells, attr)
        bar = tqdm(specs, desc=f"{name:>8}", unit="artifact", leave=True, dynamic_ncols=True)
        for spec in bar:
            blocked = [failed[k] for k in _dep_keys(spec, deps) if k in failed]
            if blocked:
                failed[spec.key] = blocked[0]
                continue
            try:
                kwargs = {"device": device} if name != "generate" else {}
                res = fn(spec, store, **kwargs)
            except Exception as e:  # one cell's failure does not stop the others
                reason = f"{name}: {type(e).__name__}: {e}".splitlines()[0]
                failed[spec.key] = reason
                counts["failed"] += 1
                log.error("%s %s failed: %s", name, spec.key, reason)
                continue
            counts["cached" if res.cached else "computed"] += 1
            if res.cached:
                bar.write(f"  {name} {spec.key}: cached, not recomputed")
    rows = []
    for c in cells:
        err = next((failed[k] for k in (c.cot.key, c.checkpoint.key, c.evaluation.key) if k in failed), None)
        rows.append(cell_row(c, store, status="failed" if err else None, error=err))
    results = results_doc(grid, rows)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _write_report(out, echo)
    echo(
        f"done in {time.perf_counter() - t0:.1f}s: {counts['computed']} artifacts computed, "
        f"{counts['cached']} cached, {counts['failed']} failed -> {out / 'results.json'}"
    )
    return results


def _dep_keys(spec, deps: list[str]) -> list[str]:
    return [getattr(spec, d).key for d in deps]


def _write_report(out: Path, echo: Callable[[str], None]) -> None:
    from shared.report.build import report_from_dir

    try:
        report_from_dir(out, out)
    except Exception as e:  # the results are written; a report failure must not lose them
        echo(f"report failed: {type(e).__name__}: {e}")
