"""`cotd report GRID_ID`: the report of a distributed grid, from its results and the artifact store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.orchestration.context import Context, get_context
from shared.orchestration.state import GridState
from shared.orchestration.submit import grid_doc_path, grid_results


def is_grid_id(ctx: Context | None, name: str) -> bool:
    """Whether `name` is a grid known to Redis (and not a local path)."""
    if Path(name).exists() or "/" in name:
        return False
    try:
        return GridState((ctx or get_context()).redis, name).exists()
    except Exception:  # Redis away: not a grid we can report on
        return False


def report_grid(grid_id: str, out_dir: str | Path | None = None, ctx: Context | None = None) -> tuple[dict[str, Any], Path]:
    """Write results.json and the report of a grid into `out_dir` (default `reports/<grid id>`)."""
    from shared.report.build import build_report, store_loaders

    ctx = ctx or get_context()
    gs = GridState(ctx.redis, grid_id)
    results = ctx.store.get_json(grid_doc_path(grid_id, "results.json"))
    if results is None:  # not finished: the results so far
        results = grid_results(ctx, gs)
    out = Path(out_dir) if out_dir is not None else Path("reports") / grid_id
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    predictions, cot_stats = store_loaders(ctx.store)
    return build_report(results, predictions, cot_stats, out), out
