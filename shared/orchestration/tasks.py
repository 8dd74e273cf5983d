"""The Celery tasks: one per stage. Each validates its message, runs the shared stage function,
records the outcome in Redis, and enqueues what waited on its artifact.

Failure policy:
- a bad message (malformed JSON, unknown or missing fields, unknown grid) is logged with the
  reason, dead-lettered (`cotd:dead`) and rejected without requeue: it is never redelivered. If it
  was sent for an artifact of a live grid (version skew), that artifact and its cells fail with
  the reason, so the grid ends;
- a cancelled grid stops its running tasks at the next step, batch or item (nothing is published);
- a transient error (S3 or teacher server unreachable, 5xx, timeouts, a full disk) is retried with
  exponential backoff and full jitter (Celery's own backoff helper): `COTD_RETRY_BACKOFF_S` (30 s),
  twice that, ... capped at 10 min, 5 retries. A full disk first removes the task's scratch folder,
  evicts the download cache and stops this worker taking tasks for a while
  (`shared.orchestration.disk`), so the retry runs on another node;
- any other error (also while recording the outcome or enqueueing what follows), or a transient
  one after the last retry, fails the artifact, what waits on it and the cells that need it, with
  the reason; the grid's other cells go on.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from shared.celery_app import app
from shared.errors import reason_of
from shared.messages import (
    GRID_ID_PATTERN,
    BadMessage,
    EvaluateMessage,
    GenerateMessage,
    Message,
    TrainMessage,
    parse_message,
)
from shared.metrics import TaskTally, task_tally, track_task
from shared.orchestration import disk, observe
from shared.orchestration.cancel import CancelCheck, Cancelled
from shared.orchestration.context import Context, get_context
from shared.orchestration.deadletter import dead_letter
from shared.orchestration.disk import is_disk_full
from shared.orchestration.lease import Lease
from shared.orchestration.stages import StageResult
from shared.orchestration.state import GridState, art_id
from shared.orchestration.submit import enqueue_next, finalize
from shared.policy import PolicyError, check_worker_spec
from shared.queues import ARTIFACT_KIND, TASK_NAMES, Queue

log = logging.getLogger("cotd.worker")

MAX_RETRIES = 5
BACKOFF_FACTOR_S = 30
BACKOFF_MAX_S = 600


class TransientError(RuntimeError):
    """An outage worth retrying (stage code may raise it explicitly)."""


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) is an outage rather than a problem with the work itself."""
    import urllib3.exceptions
    from minio.error import S3Error, ServerError

    if is_disk_full(exc):
        return True
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, TransientError | ConnectionError | TimeoutError | urllib3.exceptions.HTTPError | ServerError):
            return True
        if isinstance(e, S3Error) and e.code in ("InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"):
            return True
        name = type(e).__name__
        if name in ("ConnectError", "ReadTimeout", "ConnectTimeout", "RemoteProtocolError", "TransportError"):
            return True  # httpx, without importing it
        e = e.__cause__ or e.__context__
    return False


def backoff_s(retries: int, factor_s: float = BACKOFF_FACTOR_S) -> int:
    """Seconds before retry number `retries + 1`: exponential, capped, full jitter."""
    return get_exponential_backoff_interval(factor_s, retries, BACKOFF_MAX_S, full_jitter=True)


def _after_disk_full(ctx: Context, kind: str, key: str) -> None:
    """Free what this worker can and stop it taking tasks, so the retry runs elsewhere."""
    shutil.rmtree(ctx.store.scratch(kind, key), ignore_errors=True)
    evicted = ctx.store.evict(0)
    log.warning("disk full: removed the scratch of %s/%s and %d cached artifacts", kind, key, len(evicted))
    if disk.GUARD is not None:
        disk.GUARD.full()


def _stage_fn(queue: Queue, mode: str):
    if mode == "noop":
        from shared.orchestration import noop

        return {Queue.GENERATE: noop.noop_generate, Queue.TRAIN: noop.noop_train, Queue.EVALUATE: noop.noop_evaluate}[queue]
    from shared.orchestration.stages import evaluate_stage, generate_stage, train_stage

    return {Queue.GENERATE: generate_stage, Queue.TRAIN: train_stage, Queue.EVALUATE: evaluate_stage}[queue]


def _spec(msg: Message):
    if isinstance(msg, GenerateMessage):
        return msg.cot
    if isinstance(msg, TrainMessage):
        return msg.checkpoint
    return msg.evaluation


def _call_stage(queue: Queue, msg: Message, ctx: Context, check: CancelCheck) -> StageResult:
    fn = _stage_fn(queue, ctx.settings.stage_mode)
    kwargs: dict[str, Any] = {}
    if ctx.settings.stage_mode != "noop":
        kwargs["check"] = check
        if queue in (Queue.TRAIN, Queue.EVALUATE):
            kwargs["device"] = ctx.settings.device
    return fn(_spec(msg), ctx.store, **kwargs)


def run_stage_task(task: Task, queue: Queue, args: tuple, kwargs: dict, ctx: Context | None = None) -> dict[str, Any]:
    """The body shared by the three tasks: its one argument is the message."""
    with track_task(str(queue)):
        ctx = ctx or get_context()
        if len(args) != 1 or kwargs:
            got = f"{len(args)} positional and {len(kwargs)} keyword arguments"
            _reject(ctx, task, queue, {"args": list(args), "kwargs": kwargs}, f"{queue} message: expected one argument, got {got}")
        payload = args[0]
        try:
            msg = parse_message(queue, payload)
            check_worker_spec(_spec(msg), ctx.settings)  # before any file the message names is opened
        except (BadMessage, PolicyError) as e:
            _reject(ctx, task, queue, payload, str(e))
        gs = GridState(ctx.redis, msg.grid_id)
        status = gs.status()
        if status is None:
            _reject(ctx, task, queue, payload, f"unknown grid {msg.grid_id}")
        aid = art_id(str(queue), msg.key)
        if status == "cancelled":
            log.info("grid=%s key=%s stage=%s: skipped, the grid is cancelled", gs.id, msg.key, queue)
            return {"skipped": "cancelled"}
        state = gs.get("art", aid)
        if state in ("failed", "done", "cached"):
            log.info("grid=%s key=%s stage=%s: skipped, already %s", gs.id, msg.key, queue, state)
            return {"skipped": state}
        return _execute(task, queue, msg, gs, aid, ctx)


def _reject(ctx: Context, task: Task, queue: Queue, payload: Any, reason: str) -> NoReturn:
    """Dead-letter a message that cannot run, fail the cells it was sent for, and drop it."""
    log.error("rejected message %s on queue %s: %s", task.request.id, queue, reason)
    dead_letter(ctx.redis, str(queue), f"rejected: {reason}", {"task": task.name, "id": task.request.id}, payload)
    gs, aid = _sent_for(ctx, task, queue, payload)
    if gs is not None and aid is not None:
        _fail(ctx, gs, aid, f"{queue}: rejected message: {reason}")
    raise Reject(reason, requeue=False)


def _sent_for(ctx: Context, task: Task, queue: Queue, payload: Any) -> tuple[GridState | None, str | None]:
    """The live grid and artifact this message was sent for (by its task id), if it names one."""
    doc = payload
    if isinstance(payload, str | bytes):
        try:
            doc = json.loads(payload)
        except ValueError:
            return None, None
    gid = doc.get("grid_id") if isinstance(doc, dict) else None
    if not isinstance(gid, str) or not re.match(GRID_ID_PATTERN, gid):
        return None, None
    gs = GridState(ctx.redis, gid)
    if gs.status() not in ("running", "cancelled"):
        return None, None
    for aid, tid in gs.hash("tasks").items():
        if tid == task.request.id and aid.startswith(f"{queue}:"):
            return gs, aid
    return None, None


def _execute(task: Task, queue: Queue, msg: Message, gs: GridState, aid: str, ctx: Context) -> dict[str, Any]:
    kind = ARTIFACT_KIND[queue]
    gs.set_art([aid], "running")
    gs.set_cells(gs.json_list("cells_of", aid), "running", allowed=("pending",))
    _publish_counts(gs)
    if isinstance(msg, GenerateMessage):
        observe.init_teacher_series(msg.cot.teacher.name, msg.cot.teacher.concurrency)
    tally = task_tally()  # what this task's own code counts live (other threads' tasks excluded)
    t0 = time.perf_counter()
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    log.info(
        "grid=%s key=%s stage=%s: started (retry %d%s)", gs.id, msg.key, queue, task.request.retries, ", redelivered" * redelivered
    )
    check = CancelCheck(gs, ctx.settings.cancel_check_s)
    try:
        lease = Lease(ctx.redis, kind, msg.key, ctx.settings.lease_ttl_s)
        if lease.acquire(lambda: ctx.store.exists(kind, msg.key)):
            with lease:
                result = _call_stage(queue, msg, ctx, check)
        else:
            result = StageResult(kind=kind, key=msg.key, cached=True, manifest=ctx.store.manifest(kind, msg.key) or {})
        if not result.complete:
            raise RuntimeError(f"training stopped early: {result.stopped}")
        secs = time.perf_counter() - t0
        _done(gs, queue, msg, aid, result, tally, ctx)
    except Cancelled:
        log.info("grid=%s key=%s stage=%s: stopped, the grid was cancelled", gs.id, msg.key, queue)
        gs.set_art([aid], "cancelled")
        _maybe_finish(ctx, gs)
        return {"skipped": "cancelled"}
    except SoftTimeLimitExceeded as e:
        _fail(ctx, gs, aid, reason_of(str(queue), e))
        raise
    except Exception as e:
        if is_disk_full(e):
            _after_disk_full(ctx, kind, msg.key)
        if is_transient(e) and task.request.retries < MAX_RETRIES:
            wait = backoff_s(task.request.retries, ctx.settings.retry_backoff_s)
            log.warning("grid=%s key=%s stage=%s: %s; retry %d in %ds", gs.id, msg.key, queue, reason_of(str(queue), e), task.request.retries + 1, wait)
            gs.set_art([aid], "queued", allowed=("running",))
            raise task.retry(exc=e, countdown=wait, max_retries=MAX_RETRIES) from None
        _fail(ctx, gs, aid, reason_of(str(queue), e))
        raise
    log.info("grid=%s key=%s stage=%s: %s in %.1fs", gs.id, msg.key, queue, "cached" if result.cached else "built", secs)
    return {"grid_id": gs.id, "key": msg.key, "cached": result.cached}


def _publish_counts(gs: GridState) -> None:
    from shared.metrics import set_grid_cells

    try:
        set_grid_cells(gs.id, gs.counts())
    except Exception as e:  # metrics never break a task
        log.debug("grid metrics: %s", e)


def _fail(ctx: Context, gs: GridState, aid: str, reason: str) -> None:
    failed = gs.fail(aid, reason)
    log.error("grid=%s artifact=%s: failed (%d cells): %s", gs.id, aid, len(failed), reason)
    _maybe_finish(ctx, gs)


def _maybe_finish(ctx: Context, gs: GridState) -> None:
    _publish_counts(gs)
    if gs.finish_claim():
        finalize(ctx, gs)


def _done(gs: GridState, queue: Queue, msg: Message, aid: str, result: StageResult, tally: TaskTally, ctx: Context) -> None:
    """Record a published artifact. What follows it is enqueued before the artifact is marked done,
    so a failure here leaves it running, and the retry (which finds it cached) enqueues the rest."""
    if not result.cached:
        gs.count_computed(str(queue))
        try:
            if isinstance(msg, GenerateMessage):
                observe.observe_generate(msg.cot.teacher.name, ctx.store.fetch("cotsets", msg.key), tally)
            elif isinstance(msg, TrainMessage):
                observe.observe_train(result.manifest.get("train") or {}, tally)
        except Exception as e:  # metrics never fail a task
            log.warning("metrics for %s: %s", aid, e)
    if isinstance(msg, EvaluateMessage):
        cells = gs.json_list("cells_of", aid)
        gs.set_cells(cells, "done")
        labels = gs.hash("labels") if cells else {}
        for c in cells:
            observe.observe_evaluate(gs.id, labels.get(c, c), result.manifest.get("metrics") or {}, tally)
    else:
        enqueue_next(ctx, gs, aid)
    gs.set_art([aid], "cached" if result.cached else "done", allowed=("pending", "queued", "running"))
    _maybe_finish(ctx, gs)


@app.task(name=TASK_NAMES[Queue.GENERATE], bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def generate_task(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Build one CoT set, then enqueue the checkpoints that train on it."""
    return run_stage_task(self, Queue.GENERATE, args, kwargs)


@app.task(name=TASK_NAMES[Queue.TRAIN], bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def train_task(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Train one checkpoint (resuming from its scratch state), then enqueue its evaluations."""
    return run_stage_task(self, Queue.TRAIN, args, kwargs)


@app.task(name=TASK_NAMES[Queue.EVALUATE], bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def evaluate_task(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Score one checkpoint on its test set; the cell is done."""
    return run_stage_task(self, Queue.EVALUATE, args, kwargs)
