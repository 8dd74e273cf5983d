"""`cotd worker ROLE`: a Celery worker on the role's queue that serves Prometheus `/metrics`.

Process model: every role runs its tasks in threads of the worker process (`--pool threads`): the
generator several at once (teacher calls are I/O bound), the trainer and evaluator one at a time
(`--concurrency 1`), one worker per GPU (`CUDA_VISIBLE_DEVICES`). The main thread keeps consuming
control messages while a task runs, so `celery inspect active` answers during a 10-hour training
run (a `solo` worker would not). Tasks run in the process that serves `/metrics`, so the metrics
they update are the ones scraped. Each worker also runs a supervisor thread
(`shared.orchestration.supervisor`) that re-enqueues the work of dead workers.
"""

from __future__ import annotations

import logging
import os
import socket

from shared.orchestration import disk
from shared.queues import ROLE_QUEUES, Queue

log = logging.getLogger("cotd.worker")


def worker_argv(role: str, concurrency: int, loglevel: str = "INFO", hostname: str | None = None) -> list[str]:
    """The `celery worker` arguments for a role."""
    queue = ROLE_QUEUES[role]
    name = hostname or f"{role}-{os.getpid()}@{socket.gethostname()}"
    return [
        "worker",
        "--queues",
        str(queue),
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--hostname",
        name,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "--prefetch-multiplier",
        "1",
    ]


def run_worker(role: str, metrics_port: int | None, concurrency: int, loglevel: str = "INFO") -> None:
    """Serve `/metrics`, export queue depth, and consume the role's queue until stopped."""
    from shared.celery_app import app
    from shared.metrics import register_queue_depth_exporter, start_metrics_server
    from shared.orchestration.context import get_context
    from shared.orchestration.observe import init_stage_series
    from shared.orchestration.supervisor import Supervisor
    from shared.settings import get_settings

    s = get_settings()
    port = s.metrics_port if metrics_port is None else metrics_port
    if port >= 0:
        start_metrics_server(port, role=role)
        register_queue_depth_exporter(s.redis_url, [str(q) for q in Queue])
    init_stage_series(str(ROLE_QUEUES[role]))
    if role in ("trainer", "evaluator") and s.stage_mode != "noop":
        import torch  # loaded before the first task, so the first task's time is its own

        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    log.info("cotd worker %s: queue %s, concurrency %d, metrics port %s, stage mode %s", role, ROLE_QUEUES[role], concurrency, port, s.stage_mode)
    hostname = f"{role}-{os.getpid()}@{socket.gethostname()}"
    ctx = get_context()
    disk.GUARD = disk.DiskGuard(
        app, str(ROLE_QUEUES[role]), hostname, ctx.store.scratch_root.parent, s.min_free_mb * 2**20, s.disk_full_pause_s
    )
    supervisor = Supervisor(ctx, guard=disk.GUARD).start()
    try:
        app.worker_main(worker_argv(role, concurrency, loglevel, hostname=hostname))
    finally:
        supervisor.stop()
