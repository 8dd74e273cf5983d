"""`cotd grid submit|status|wait|cancel|list` and `cotd worker generator|trainer|evaluator`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from shared.queues import ROLE_QUEUES
from shared.redact import redact


def _ctx():
    from shared.orchestration.context import get_context

    return get_context()


def _grid_state(grid_id: str):
    from shared.orchestration.state import GridState

    gs = GridState(_ctx().redis, grid_id)
    if not gs.exists():
        raise click.ClickException(f"no grid {grid_id!r} in {redact(_ctx().settings.redis_url)}")
    return gs


def status_doc(gs) -> dict:
    """Everything `cotd grid status` shows, as JSON."""
    meta = gs.meta()
    states, reasons, labels = gs.cells(), gs.hash("reasons"), gs.hash("labels")
    cells = [
        {
            "cell": k,
            "label": labels.get(k, k),
            "state": st,
            **({"reason": reasons[k]} if k in reasons else {}),
        }
        for k, st in sorted(states.items(), key=lambda kv: labels.get(kv[0], kv[0]))
    ]
    return {
        "grid_id": gs.id,
        "name": meta.get("name"),
        "status": meta.get("status"),
        "created_at": float(meta.get("created_at", 0)),
        "finished_at": float(meta["finished_at"]) if meta.get("finished_at") else None,
        **({"reason": meta["reason"]} if meta.get("reason") else {}),
        "counts": gs.counts(),
        "stages": gs.stage_counts(),
        "cells": cells,
    }


@click.group("grid")
def grid() -> None:
    """Distributed grids: submit to the queues, follow, cancel."""


@grid.command("submit")
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the submit summary as JSON.")
def submit_cmd(grid_file: Path, as_json: bool) -> None:
    """Expand GRID_FILE, enqueue the missing work, and print the grid id."""
    from shared.grid import load_grid
    from shared.orchestration.submit import submit_grid

    res = submit_grid(load_grid(grid_file), _ctx())
    if as_json:
        click.echo(res.model_dump_json())
        return
    click.echo(
        f"{res.cells} cells, {res.cached_cells} cached; enqueued {res.enqueued['generate']} generate, "
        f"{res.enqueued['train']} train, {res.enqueued['evaluate']} evaluate ({res.seconds:.2f}s)",
        err=True,
    )
    click.echo(res.grid_id)


@grid.command("plan")
@click.argument("grid_files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--gpus", type=click.IntRange(min=1), default=8, show_default=True, help="GPUs for the wall-clock figure."
)
@click.option(
    "--store",
    "store",
    default=None,
    help="Count cache hits in this local store folder, or 'settings' for the configured store (COTD_STORE).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_cmd(grid_files: tuple[Path, ...], gpus: int, store: str | None, as_json: bool) -> None:
    """What GRID_FILES will cost: tasks after de-duplication and cache hits, tokens, GPU-hours."""
    from shared.grid import load_grid
    from shared.orchestration.plan import format_plan, plan_grids, published_keys

    grids = [load_grid(f) for f in grid_files]
    plan = plan_grids(grids, published_keys(store, _ctx), gpus=gpus)
    click.echo(plan.model_dump_json(indent=2) if as_json else format_plan(plan))


@grid.command("status")
@click.argument("grid_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(grid_id: str, as_json: bool) -> None:
    """Per-stage counts and each cell's state (with the reason of a failure)."""
    doc = status_doc(_grid_state(grid_id))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    c = doc["counts"]
    reason = f" ({doc['reason']})" if "reason" in doc else ""
    click.echo(f"grid {doc['grid_id']} ({doc['name']}): {doc['status']}{reason}")
    click.echo("cells: " + ", ".join(f"{k} {v}" for k, v in c.items() if v))
    for stage in ("generate", "train", "evaluate"):
        st = doc["stages"].get(stage, {})
        parts = [f"{k} {v}" for k, v in sorted(st.items()) if v and k not in ("total", "computed")]
        click.echo(
            f"  {stage:9s} total {st.get('total', 0)}, built {st.get('computed', 0)}: {', '.join(parts) or '-'}"
        )
    for cell in doc["cells"]:
        reason = f"  {cell['reason']}" if "reason" in cell else ""
        click.echo(f"  {cell['state']:9s} {cell['label']}{reason}")


@grid.command("wait")
@click.argument("grid_id")
@click.option("--timeout", type=float, default=None, help="Give up after S seconds (exit 2).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls.")
def wait_cmd(grid_id: str, timeout: float | None, interval: float) -> None:
    """Block until the grid is finished; exit 1 if any cell failed, 2 on timeout."""
    gs = _grid_state(grid_id)
    t0 = time.monotonic()
    last = None
    while True:
        status = gs.status()
        counts = gs.counts()
        line = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        if line != last:
            click.echo(f"{grid_id}: {status}: {line}", err=True)
            last = line
        if status in ("done", "failed", "cancelled"):
            break
        if timeout is not None and time.monotonic() - t0 > timeout:
            click.echo(f"{grid_id}: still {status} after {timeout:g}s", err=True)
            sys.exit(2)
        time.sleep(interval)
    if status != "done":
        doc = status_doc(gs)
        if "reason" in doc:
            click.echo(f"  {doc['reason']}", err=True)
        for cell in doc["cells"]:
            if cell["state"] in ("failed", "cancelled"):
                reason = f": {cell['reason']}" if "reason" in cell else ""
                click.echo(f"  {cell['state']} {cell['label']}{reason}", err=True)
        sys.exit(1)


@grid.command("cancel")
@click.argument("grid_id")
def cancel_cmd(grid_id: str) -> None:
    """Cancel a grid: waiting work is dropped, workers skip its tasks."""
    from shared.orchestration.submit import cancel_grid

    res = cancel_grid(_ctx(), _grid_state(grid_id))
    click.echo(
        f"{grid_id}: cancelled {res['cells']} cells, {res['artifacts']} artifacts; revoked {res['revoked']} tasks"
    )


@grid.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
def list_cmd(limit: int) -> None:
    """The most recent grids and their status."""
    from shared.orchestration.state import GridState, list_grids

    r = _ctx().redis
    for gid in list_grids(r, limit):
        gs = GridState(r, gid)
        c = gs.counts()
        click.echo(f"{gid}  {gs.status()}  " + ", ".join(f"{k} {v}" for k, v in c.items() if v))


@grid.command("dead")
@click.option("--limit", type=int, default=20, show_default=True, help="Show the newest N records.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--clear", is_flag=True, help="Empty the list after showing it.")
def dead_cmd(limit: int, as_json: bool, clear: bool) -> None:
    """Messages the workers dropped as unreadable (the `cotd:dead` list), newest first."""
    from shared.orchestration.deadletter import DEAD_KEY, dead_letters

    r = _ctx().redis
    recs = dead_letters(r, limit)
    if as_json:
        click.echo(json.dumps(recs, indent=2))
    else:
        click.echo(f"{r.llen(DEAD_KEY)} dead letters", err=True)
        for rec in recs:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec["time"]))
            click.echo(
                f"{when}  {rec['queue'] or '-'}  {rec['task'] or '-'}  {rec['id'] or '-'}  {rec['reason']}"
            )
    if clear:
        r.delete(DEAD_KEY)


@click.command("worker")
@click.argument("role", type=click.Choice(sorted(ROLE_QUEUES)))
@click.option(
    "--metrics-port", type=int, default=None, help="Port of /metrics (default COTD_METRICS_PORT; -1: none)."
)
@click.option("--concurrency", type=int, default=None, help="Tasks at once (default: generator 4, others 1).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(role: str, metrics_port: int | None, concurrency: int | None, loglevel: str) -> None:
    """A Celery worker on ROLE's queue (generate, train or evaluate) that serves /metrics."""
    from shared.orchestration.worker import run_worker

    run_worker(role, metrics_port, concurrency or (4 if role == "generator" else 1), loglevel)
