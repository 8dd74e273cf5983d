"""Every Prometheus metric of cotd, defined once, plus the helpers that serve and feed them.

Naming convention (checked by ``tests/unit/test_metrics.py``)::

    cotd_<stage>_<what>_<unit>

- ``<stage>`` is one of ``worker``, ``generator``, ``trainer``, ``evaluator``, ``queue``, ``grid``
  (:data:`STAGES`): who measures it.
- ``<what>`` is zero or more lowercase words joined by ``_``.
- ``<unit>`` is one of :data:`UNITS`: a base unit (``seconds``, ``bytes``, ``ratio`` in 0..1), a rate
  (``per_second``), or the thing counted (``messages``, ``cells``, ``tokens``, ``tasks``, ``limit``,
  ``loss``). Counters end in ``_total`` (the documented name includes it).

Metrics live in the module registry :data:`REGISTRY` (not prometheus_client's global one), so that a
test can list exactly the metrics defined here. :func:`start_metrics_server` serves it, together with
the process/platform collectors and any exporter registered with
:func:`register_queue_depth_exporter`.

Label values must have bounded cardinality: ``stage`` is a queue/stage name, ``teacher`` a teacher
name from the grid, ``status``/``outcome``/``kind``/``code``/``state`` come from small fixed sets.
Only the evaluator's ``{grid, cell}`` gauges grow with the number of cells a process has scored.

Process model. Metrics live in the process that updates them. A Celery worker that runs tasks in
prefork children must either use ``--pool threads`` / ``--pool solo`` (the simple way: the worker
process serves ``/metrics`` itself), or set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable folder
*before* this module is imported: :func:`start_metrics_server` then aggregates every child's values
(call :func:`mark_process_dead` from Celery's ``worker_process_shutdown`` signal).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("worker", "generator", "trainer", "evaluator", "queue", "grid")
"""The allowed ``<stage>`` parts of a metric name."""

UNITS: tuple[str, ...] = (
    "total",
    "seconds",
    "bytes",
    "ratio",
    "per_second",
    "messages",
    "cells",
    "tokens",
    "tasks",
    "limit",
    "loss",
)
"""The allowed ``<unit>`` endings of a metric name."""

NAME_PATTERN = re.compile(
    r"^cotd_(?:" + "|".join(STAGES) + r")_(?:[a-z0-9]+_)*?(?:" + "|".join(UNITS) + r")$"
)
"""What every documented metric name (counters with their ``_total``) must match."""

REGISTRY = CollectorRegistry(auto_describe=True)
"""The registry holding every cotd metric (and nothing else)."""

_MULTIPROC = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# Stage durations range from sub-second (a cached artifact) to many hours (a full fine-tune).
TASK_DURATION_BUCKETS: tuple[float, ...] = (
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    28800,
    57600,
    86400,
)
# One teacher request: from a fast cache hit to a long level-6 rationale on a loaded server.
TEACHER_LATENCY_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2,
    4,
    8,
    15,
    30,
    60,
    120,
    300,
    600,
)

# --------------------------------------------------------------------------------------------- worker
WORKER_TASKS_STARTED = Counter(
    "cotd_worker_tasks_started_total", "Tasks a worker began, by stage.", ["stage"], registry=REGISTRY
)
WORKER_TASKS_SUCCEEDED = Counter(
    "cotd_worker_tasks_succeeded_total",
    "Tasks that finished without error, by stage.",
    ["stage"],
    registry=REGISTRY,
)
WORKER_TASKS_FAILED = Counter(
    "cotd_worker_tasks_failed_total",
    "Tasks that raised (retries excluded), by stage.",
    ["stage"],
    registry=REGISTRY,
)
WORKER_TASKS_RETRIED = Counter(
    "cotd_worker_tasks_retried_total",
    "Tasks that asked Celery for a retry, by stage.",
    ["stage"],
    registry=REGISTRY,
)
WORKER_IN_PROGRESS = Gauge(
    "cotd_worker_in_progress_tasks",
    "Tasks running now, by stage.",
    ["stage"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
WORKER_TASK_DURATION = Histogram(
    "cotd_worker_task_duration_seconds",
    "Wall time of one task, by stage (any outcome).",
    ["stage"],
    buckets=TASK_DURATION_BUCKETS,
    registry=REGISTRY,
)

# ------------------------------------------------------------------------------------------ generator
GENERATOR_TEACHER_REQUESTS = Counter(
    "cotd_generator_teacher_requests_total",
    "Requests to a teacher server. status: ok, overloaded (429/503), http_error, timeout, error.",
    ["teacher", "status"],
    registry=REGISTRY,
)
GENERATOR_TEACHER_LATENCY = Histogram(
    "cotd_generator_teacher_latency_seconds",
    "Latency of one teacher request (any outcome).",
    ["teacher"],
    buckets=TEACHER_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GENERATOR_TEACHER_TOKENS = Counter(
    "cotd_generator_teacher_tokens_total",
    "Tokens exchanged with a teacher. kind: prompt or completion.",
    ["teacher", "kind"],
    registry=REGISTRY,
)
GENERATOR_TEACHER_OVERLOADED = Counter(
    "cotd_generator_teacher_overloaded_total",
    "Teacher answers that asked to back off, by HTTP code (429, 503).",
    ["teacher", "code"],
    registry=REGISTRY,
)
GENERATOR_CONCURRENCY_LIMIT = Gauge(
    "cotd_generator_concurrency_limit",
    "Current adaptive limit of concurrent requests to a teacher.",
    ["teacher"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
GENERATOR_RATIONALES = Counter(
    "cotd_generator_rationales_total",
    "Rationales written by a teacher. outcome: correct, incorrect, unparsed (answer not found).",
    ["teacher", "outcome"],
    registry=REGISTRY,
)

# -------------------------------------------------------------------------------------------- trainer
TRAINER_TOKENS_PER_SECOND = Gauge(
    "cotd_trainer_tokens_per_second",
    "Training throughput over the last logging window.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
TRAINER_TOKENS = Counter(
    "cotd_trainer_tokens_total",
    "Tokens trained on (prompt and response, padding excluded).",
    registry=REGISTRY,
)
TRAINER_STEPS = Counter("cotd_trainer_steps_total", "Optimizer steps taken.", registry=REGISTRY)
TRAINER_LOSS = Gauge(
    "cotd_trainer_loss",
    "Training loss (response tokens) at the last logging step.",
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
TRAINER_PEAK_MEMORY = Gauge(
    "cotd_trainer_peak_memory_bytes",
    "Peak accelerator memory allocated during the current/last run.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)

# ------------------------------------------------------------------------------------------ evaluator
EVALUATOR_ACCURACY = Gauge(
    "cotd_evaluator_accuracy_ratio",
    "Accuracy (0..1) of a cell's student on its test set.",
    ["grid", "cell"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
EVALUATOR_EXTRACTION_FAILURE = Gauge(
    "cotd_evaluator_extraction_failure_ratio",
    "Share (0..1) of a cell's outputs with no extractable answer.",
    ["grid", "cell"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
EVALUATOR_TOKENS_PER_SECOND = Gauge(
    "cotd_evaluator_tokens_per_second",
    "Generation throughput of the last evaluation batch.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
EVALUATOR_TOKENS = Counter(
    "cotd_evaluator_tokens_total",
    "Tokens generated while evaluating.",
    registry=REGISTRY,
)
EVALUATOR_PREDICTIONS = Counter(
    "cotd_evaluator_predictions_total",
    "Predictions scored. outcome: correct, incorrect, unparsed.",
    ["outcome"],
    registry=REGISTRY,
)

# ----------------------------------------------------------------------------------------------- grid
GRID_CELLS = Gauge(
    "cotd_grid_cells",
    "Cells of a grid by state (pending, generating, training, evaluating, done, failed, ...).",
    ["grid", "state"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

# ---------------------------------------------------------------------------------------------- queue
QUEUE_SCRAPE_ERRORS = Counter(
    "cotd_queue_scrape_errors_total",
    "Scrapes where the queue-depth exporter could not read Redis.",
    registry=REGISTRY,
)
QUEUE_DEPTH_NAME = "cotd_queue_depth_messages"
QUEUE_UNACKED_NAME = "cotd_queue_unacked_messages"

# Celery's Redis transport (kombu) keeps a queue as a Redis list named after it; messages with a
# priority go to sibling lists "<queue>\x06\x16<step>" for the non-zero priority steps.
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS: tuple[int, ...] = (3, 6, 9)
KOMBU_UNACKED_KEY = "unacked"


# -------------------------------------------------------------------------------------------- helpers
@contextmanager
def track_task(stage: str) -> Iterator[None]:
    """Count a task as started, then succeeded / failed / retried, and observe its duration.

    Celery's ``Retry`` exception counts as retried, not failed. The exception is always re-raised.
    """
    WORKER_TASKS_STARTED.labels(stage=stage).inc()
    WORKER_IN_PROGRESS.labels(stage=stage).inc()
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        if _is_celery_retry(exc):
            WORKER_TASKS_RETRIED.labels(stage=stage).inc()
        else:
            WORKER_TASKS_FAILED.labels(stage=stage).inc()
        raise
    else:
        WORKER_TASKS_SUCCEEDED.labels(stage=stage).inc()
    finally:
        WORKER_TASK_DURATION.labels(stage=stage).observe(time.perf_counter() - start)
        WORKER_IN_PROGRESS.labels(stage=stage).dec()


def _is_celery_retry(exc: BaseException) -> bool:
    try:
        from celery.exceptions import Retry
    except ImportError:  # pragma: no cover - celery is a project dependency
        return False
    return isinstance(exc, Retry)


def observe_teacher_request(
    teacher: str,
    status: str,
    latency_s: float,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    http_code: int | None = None,
) -> None:
    """Record one teacher request: count, latency, tokens, and 429/503 back-off answers."""
    GENERATOR_TEACHER_REQUESTS.labels(teacher=teacher, status=status).inc()
    GENERATOR_TEACHER_LATENCY.labels(teacher=teacher).observe(latency_s)
    if prompt_tokens:
        GENERATOR_TEACHER_TOKENS.labels(teacher=teacher, kind="prompt").inc(prompt_tokens)
    if completion_tokens:
        GENERATOR_TEACHER_TOKENS.labels(teacher=teacher, kind="completion").inc(completion_tokens)
    if http_code in (429, 503):
        GENERATOR_TEACHER_OVERLOADED.labels(teacher=teacher, code=str(http_code)).inc()


def set_grid_cells(grid: str, counts: Mapping[str, int]) -> None:
    """Publish how many cells of ``grid`` are in each state (states absent from ``counts`` are left as is)."""
    for state, n in counts.items():
        GRID_CELLS.labels(grid=grid, state=state).set(n)


def set_cell_result(
    grid: str, cell: str, accuracy: float, extraction_failure_rate: float | None = None
) -> None:
    """Publish a scored cell's accuracy (and extraction-failure rate) for the dashboard's table."""
    EVALUATOR_ACCURACY.labels(grid=grid, cell=cell).set(accuracy)
    if extraction_failure_rate is not None:
        EVALUATOR_EXTRACTION_FAILURE.labels(grid=grid, cell=cell).set(extraction_failure_rate)


# ------------------------------------------------------------------------------------ queue exporter
class QueueDepthCollector(Collector):
    """Exports ``cotd_queue_depth_messages{queue}`` by reading Redis at scrape time.

    The depth of a queue is ``LLEN <queue>`` plus the ``LLEN`` of its kombu priority lists. Also exports
    ``cotd_queue_unacked_messages``: messages delivered but not yet acknowledged (``acks_late`` tasks in
    progress or lost with their worker), from kombu's ``unacked`` hash. Redis is reached lazily: creating
    or registering the collector never connects, and a failed scrape yields no sample (and counts
    ``cotd_queue_scrape_errors_total``) instead of failing the whole ``/metrics`` answer.
    """

    def __init__(self, redis_client: Any, queues: Iterable[str]) -> None:
        self.redis = redis_client
        self.queues: list[str] = [str(q) for q in queues]

    def describe(self) -> Iterable[Metric]:
        """The metric families this collector yields (no Redis access)."""
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                QUEUE_DEPTH_NAME, "Messages waiting in a Celery queue (Redis list length).", labels=["queue"]
            ),
            GaugeMetricFamily(QUEUE_UNACKED_NAME, "Messages delivered to a worker and not yet acknowledged."),
        ]

    def read(self) -> tuple[dict[str, int], int]:
        """Return ``({queue: depth}, unacked)`` read from Redis in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for queue in self.queues:
            pipe.llen(queue)
            for step in KOMBU_PRIORITY_STEPS:
                pipe.llen(f"{queue}{KOMBU_PRIORITY_SEP}{step}")
        pipe.hlen(KOMBU_UNACKED_KEY)
        values = [int(v or 0) for v in pipe.execute()]
        per = 1 + len(KOMBU_PRIORITY_STEPS)
        depths = {q: sum(values[i * per : (i + 1) * per]) for i, q in enumerate(self.queues)}
        return depths, values[-1]

    def collect(self) -> Iterable[Metric]:
        """Read the queues now and yield the gauges."""
        depth, unacked = self._families()
        try:
            depths, n_unacked = self.read()
        except Exception as exc:  # a scrape must not fail because Redis is away
            QUEUE_SCRAPE_ERRORS.inc()
            log.warning("queue-depth exporter: cannot read Redis: %s", exc)
            return [depth, unacked]
        for queue, n in depths.items():
            depth.add_metric([queue], n)
        unacked.add_metric([], n_unacked)
        return [depth, unacked]


_EXTRA_COLLECTORS: list[Collector] = []
_EXTRA_LOCK = threading.Lock()


def register_queue_depth_exporter(
    redis_url: str, queues: Iterable[str], registry: CollectorRegistry | None = None
) -> QueueDepthCollector:
    """Create a :class:`QueueDepthCollector` for ``redis_url`` and register it.

    Registers in ``registry`` when given, else with the served metrics (:data:`REGISTRY`, and the
    multiprocess view when that mode is on). Does not connect to Redis until the first scrape.
    """
    import redis  # local: keeps `import shared.metrics` light

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    collector = QueueDepthCollector(client, queues)
    if registry is not None:
        registry.register(collector)
        return collector
    REGISTRY.register(collector)
    with _EXTRA_LOCK:
        _EXTRA_COLLECTORS.append(collector)
    return collector


class _Union(Collector):
    """Yields what several collectors yield (a registry is a collector too)."""

    def __init__(self, parts: Iterable[Collector]) -> None:
        self.parts = list(parts)

    def collect(self) -> Iterable[Metric]:
        for part in self.parts:
            yield from part.collect()


class _ExtraCollectors(Collector):
    """The exporters registered with :func:`register_queue_depth_exporter`, read at scrape time."""

    def collect(self) -> Iterable[Metric]:
        with _EXTRA_LOCK:
            extra = list(_EXTRA_COLLECTORS)
        for collector in extra:
            yield from collector.collect()


def served_collector() -> Collector:
    """What :func:`start_metrics_server` serves: cotd metrics plus process and platform metrics.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, the cotd metrics are the aggregate of every process's files
    (plus the exporters, which are read live by the serving process).
    """
    if _MULTIPROC:
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return _Union([merged, _ExtraCollectors()])
    return _Union([REGISTRY, PROCESS_COLLECTOR, PLATFORM_COLLECTOR])


def start_metrics_server(port: int, addr: str | None = None) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns ``(server, thread)``.

    ``addr`` defaults to ``COTD_METRICS_HOST`` (127.0.0.1; compose sets 0.0.0.0 for Prometheus).
    Port 0 picks a free port (read it from ``server.server_port``).
    """
    if addr is None:
        from shared.settings import get_settings

        addr = get_settings().metrics_host
    server, thread = start_http_server(port, addr=addr, registry=served_collector())
    log.info("metrics served on %s:%s/metrics", addr, server.server_port)
    return server, thread


def mark_process_dead(pid: int | None = None) -> None:
    """Multiprocess mode only: drop a finished child's live gauges (call on worker_process_shutdown)."""
    if _MULTIPROC:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid if pid is not None else os.getpid())


# -------------------------------------------------------------------------------------- introspection
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def _all_families() -> list[Metric]:
    """The families defined in this module, from ``describe()`` only (never reads Redis)."""
    wrappers = [v for v in globals().values() if isinstance(v, MetricWrapperBase)]
    families: list[Metric] = []
    for metric in wrappers:
        families.extend(metric.describe())
    families.extend(QueueDepthCollector(None, []).describe())
    return families


def metric_names() -> dict[str, str]:
    """Every metric defined here, as ``{documented name: type}`` (counters with ``_total``)."""
    out: dict[str, str] = {}
    for fam in _all_families():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = fam.type
    return out


def series_names() -> set[str]:
    """Every series name the metrics here can expose (``_bucket``, ``_count``, ``_sum``, ... included)."""
    out: set[str] = set()
    for fam in _all_families():
        out.update(fam.name + suffix for suffix in _SUFFIXES.get(fam.type, ("",)))
    return out


# ----------------------------------------------------------------------------------------- healthcheck
def own_address() -> str:
    """This host's address on its network (in a container: the one other containers connect to)."""
    import socket

    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def local_url(port: int | None = None, path: str = "/metrics") -> str:
    """``path`` on ``port`` (default ``$COTD_METRICS_PORT``, 9100) of this container's own address."""
    return f"http://{own_address()}:{port or os.environ.get('COTD_METRICS_PORT', '9100')}{path}"


def check_url(url: str | None = None, timeout: float = 4.0) -> bool:
    """True when ``url`` (default: :func:`local_url`) answers 2xx; for Docker HEALTHCHECKs.

    Probing the container's network address rather than 127.0.0.1 makes the check fail when the
    server listens on loopback only, where no other container can reach it.
    """
    import urllib.request

    try:
        with urllib.request.urlopen(url or local_url(), timeout=timeout) as resp:  # noqa: S310 - health probe
            return 200 <= resp.status < 300
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m shared.metrics --check [URL]``: exit 0 when the endpoint answers, else 1."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m shared.metrics", description=main.__doc__)
    ap.add_argument(
        "--check", nargs="?", const="", metavar="URL", help="probe URL (default: this container's /metrics)"
    )
    ap.add_argument(
        "--port", type=int, default=None, help="without URL: the port to probe on the own address"
    )
    ap.add_argument("--path", default="/metrics", help="without URL: the path to probe")
    args = ap.parse_args(argv)
    if args.check is None:
        ap.print_help()
        return 2
    return 0 if check_url(args.check or local_url(args.port, args.path)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
