"""Submitting a grid: expand, de-duplicate shared work, skip what exists, enqueue the rest.

A CoT set used by five students is one `generate` task; a checkpoint is evaluated once per test
set. Work whose artifact is already published is not enqueued: a cell whose evaluation exists is
`cached` at once. The rest is enqueued stage by stage: a finished task enqueues the tasks waiting
on its artifact (`enqueue_next`), and the worker that finishes the last cell writes the results.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel

from shared.artifacts import ArtifactStore
from shared.grid import Cell, GridSpec, expand
from shared.messages import EvaluateMessage, GenerateMessage, TrainMessage, dump_message
from shared.orchestration.context import Context
from shared.orchestration.results import cell_row, results_doc
from shared.orchestration.state import GridState, art_id, split_id
from shared.policy import check_teachers
from shared.queues import TASK_NAMES, Queue

log = logging.getLogger("cotd.grid")
KIND_OF = {"generate": "cotsets", "train": "checkpoints", "evaluate": "evals"}


class SubmitResult(BaseModel):
    """What `cotd grid submit` did."""

    grid_id: str
    cells: int
    cached_cells: int
    enqueued: dict[str, int]
    status: str
    seconds: float


def new_grid_id(name: str) -> str:
    """`<name>-<yyyymmdd-hhmmss>-<6 hex>`: unique per submission, readable in Grafana."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:40] or "grid"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def grid_doc_path(grid_id: str, name: str) -> str:
    """Where a grid's documents live in the artifact store."""
    return f"grids/{grid_id}/{name}"


def submit_grid(grid: GridSpec, ctx: Context, grid_id: str | None = None) -> SubmitResult:
    """Record the grid in Redis and the store, and enqueue the work that is not published yet."""
    t0 = time.perf_counter()
    check_teachers(grid.teachers, ctx.settings)
    gid = grid_id or new_grid_id(grid.name)
    store = ctx.store
    cells = expand(grid)
    existing = {kind: set(store.keys(kind)) for kind in KIND_OF.values()}

    cell_state: dict[str, str] = {}
    labels: dict[str, str] = {}
    arts: dict[str, str] = {}
    specs: dict[str, str] = {}
    nexts: dict[str, list[str]] = {}
    cells_of: dict[str, list[str]] = {}
    initial: dict[str, list[str]] = {"generate": [], "train": [], "evaluate": []}

    def add(stage: str, key: str, cell: Cell, payload: dict[str, Any] | None, after: str | None) -> str:
        aid = art_id(stage, key)
        cells_of.setdefault(aid, [])
        if cell.key not in cells_of[aid]:
            cells_of[aid].append(cell.key)
        if aid in arts:
            return aid
        if key in existing[KIND_OF[stage]]:
            arts[aid] = "cached"
            return aid
        arts[aid] = "pending"
        specs[aid] = json.dumps(payload)
        if after is None:
            initial[stage].append(aid)
        else:
            nexts.setdefault(after, []).append(aid)
        return aid

    for c in cells:
        labels[c.key] = c.label()
        if c.key in existing["evals"]:
            cell_state[c.key] = "cached"
            for stage, key in (("generate", c.cot.key), ("train", c.checkpoint.key), ("evaluate", c.key)):
                if key in existing[KIND_OF[stage]]:
                    arts.setdefault(art_id(stage, key), "cached")
            continue
        cell_state[c.key] = "pending"
        cot_aid = ck_aid = None
        if c.checkpoint.key not in existing["checkpoints"]:
            if c.cot.key not in existing["cotsets"]:
                cot_aid = add("generate", c.cot.key, c, dump_message(GenerateMessage(grid_id=gid, cot=c.cot)), None)
            else:
                add("generate", c.cot.key, c, None, None)
            ck_aid = add("train", c.checkpoint.key, c, dump_message(TrainMessage(grid_id=gid, checkpoint=c.checkpoint)), cot_aid)
        else:
            add("train", c.checkpoint.key, c, None, None)
        add("evaluate", c.key, c, dump_message(EvaluateMessage(grid_id=gid, evaluation=c.evaluation)), ck_aid)

    meta = {
        "id": gid,
        "name": grid.name,
        "status": "running",
        "created_at": f"{time.time():.3f}",
        "n_cells": str(len(cells)),
        "grid": grid.model_dump_json(),
    }
    store.put_json(grid_doc_path(gid, "grid.json"), json.loads(grid.model_dump_json()))
    gs = GridState(ctx.redis, gid)
    gs.create(meta, cell_state, labels, arts, specs, nexts, cells_of)
    enqueued = {stage: len(enqueue(ctx, gs, ids)) for stage, ids in initial.items()}
    n_cached = sum(1 for s in cell_state.values() if s == "cached")
    status = "running"
    if gs.finish_claim():
        status = finalize(ctx, gs)
    log.info("grid %s: %d cells, %d cached, enqueued %s", gid, len(cells), n_cached, enqueued)
    return SubmitResult(
        grid_id=gid, cells=len(cells), cached_cells=n_cached, enqueued=enqueued, status=status, seconds=time.perf_counter() - t0
    )


def enqueue(ctx: Context, gs: GridState, aids: list[str], allowed: tuple[str, ...] = ("pending",)) -> list[str]:
    """Send the tasks of these artifacts (all of one stage) that are in `allowed`; each is sent once.

    The move to `queued` is the claim: of concurrent callers, one sends each task. An artifact whose
    send fails goes back to its previous state (so a retry sends it), and the error is raised.
    """
    if not aids:
        return []
    stage = split_id(aids[0])[0]
    queue = Queue(stage)
    sent = []
    moved = gs.set_art(aids, "queued", allowed=allowed)
    for i, aid in enumerate(moved):
        payload = gs.get("specs", aid)
        if payload is None:
            continue
        task_id = str(uuid.uuid4())
        ctx.redis.hset(gs.k("tasks"), aid, task_id)  # before the send: a worker may look it up at once
        try:
            ctx.app.send_task(
                TASK_NAMES[queue], args=[json.loads(payload)], queue=str(queue), routing_key=str(queue), task_id=task_id
            )
        except Exception:
            gs.set_art(moved[i:], allowed[0], allowed=("queued",))
            raise
        sent.append(aid)
    return sent


def enqueue_next(ctx: Context, gs: GridState, aid: str) -> list[str]:
    """Enqueue what waited on `aid` (now published)."""
    by_stage: dict[str, list[str]] = {}
    for nxt in gs.json_list("next", aid):
        by_stage.setdefault(split_id(nxt)[0], []).append(nxt)
    out = []
    for ids in by_stage.values():
        out += enqueue(ctx, gs, ids)
    return out


def grid_spec(gs: GridState) -> GridSpec:
    """The grid as submitted (from Redis)."""
    return GridSpec.model_validate_json(gs.meta()["grid"])


class _Manifests:
    """The manifests `cell_row` reads, fetched in parallel up front (S3 round trips dominate)."""

    def __init__(self, store: ArtifactStore, wanted: set[tuple[str, str]], threads: int = 16) -> None:
        pairs = sorted(wanted)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            self.found = dict(zip(pairs, pool.map(lambda kk: store.manifest(*kk), pairs), strict=True))

    def manifest(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.found.get((kind, key))


def grid_results(ctx: Context, gs: GridState) -> dict[str, Any]:
    """results.json of the grid now (shared/orchestration/results.py rows, with each failed cell's reason)."""
    grid = grid_spec(gs)
    states, reasons = gs.cells(), gs.hash("reasons")
    cells = expand(grid)
    manifests = _Manifests(ctx.store, {("evals", c.key) for c in cells} | {("cotsets", c.cot.key) for c in cells})
    rows = []
    for c in cells:
        st = states.get(c.key)
        status = st if st in ("failed", "cancelled", "pending", "running") else None
        rows.append(cell_row(c, manifests, status=status, error=reasons.get(c.key)))  # type: ignore[arg-type]
    return results_doc(grid, rows)


RESULTS_ATTEMPTS = 3
"""Tries to write results.json (1 s, then 2 s apart) before the grid fails for want of it."""


def finalize(ctx: Context, gs: GridState) -> str:
    """Write grids/<id>/results.json and the grid's final status; the caller holds `finish_claim`.

    The status is recorded whatever happens to results.json: done when every cell is, failed when a
    cell failed or results.json could not be written (the reason is in the meta's `reason`),
    cancelled for a cancelled grid.
    """
    reason = ""
    for attempt in range(RESULTS_ATTEMPTS):
        try:
            ctx.store.put_json(grid_doc_path(gs.id, "results.json"), grid_results(ctx, gs))
            reason = ""
            break
        except Exception as e:  # S3 down, or anything else: the grid still ends
            reason = f"results.json not written: {type(e).__name__}: {e}".splitlines()[0][:500]
            log.warning("grid %s: %s (attempt %d of %d)", gs.id, reason, attempt + 1, RESULTS_ATTEMPTS)
            if attempt + 1 < RESULTS_ATTEMPTS:
                time.sleep(2**attempt)
    counts = gs.counts()
    status = "cancelled" if gs.status() == "cancelled" else ("failed" if counts["failed"] or reason else "done")
    gs.finish(status, reason)
    log.info("grid %s %s: %s%s", gs.id, status, counts, f" ({reason})" if reason else "")
    return status


def cancel_grid(ctx: Context, gs: GridState) -> dict[str, int]:
    """Mark the grid cancelled, cancel its waiting cells and artifacts, and revoke its queued tasks."""
    gs.set_meta(status="cancelled", finished_at=f"{time.time():.3f}")
    cells = [k for k, s in gs.cells().items() if s in ("pending", "running")]
    n_cells = len(gs.set_cells(cells, "cancelled"))
    by_stage: dict[str, list[str]] = {}
    for aid, st in gs.hash("art").items():
        if st in ("pending", "queued", "running"):
            by_stage.setdefault(split_id(aid)[0], []).append(aid)
    n_arts = sum(len(gs.set_art(ids, "cancelled")) for ids in by_stage.values())
    task_ids = list(gs.hash("tasks").values())
    if task_ids:
        try:
            ctx.app.control.revoke(task_ids)
        except Exception as e:  # workers also skip tasks of a cancelled grid
            log.warning("grid %s: revoke failed (%s); workers will skip its tasks", gs.id, e)
    return {"cells": n_cells, "artifacts": n_arts, "revoked": len(task_ids)}
