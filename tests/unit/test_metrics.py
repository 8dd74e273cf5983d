"""shared.metrics: naming convention, track_task counting, and the Redis queue-depth exporter."""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics as m

REDIS_PORT = int(os.environ.get("COTD_TEST_REDIS_PORT", "6379"))
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/15"


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    v = m.REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


def test_every_metric_follows_the_naming_convention() -> None:
    names = m.metric_names()
    assert len(names) >= 20
    bad = [n for n in names if not m.NAME_PATTERN.match(n)]
    assert not bad, f"metric names break cotd_<stage>_<what>_<unit>: {bad}"
    for name, kind in names.items():
        assert (kind == "counter") == name.endswith("_total"), f"{name}: only counters end in _total"


def test_the_pattern_rejects_bad_names() -> None:
    for bad in (
        "cotd_tasks_total",
        "cotd_foo_tasks_total",
        "worker_tasks_total",
        "cotd_worker_Tasks_total",
        "cotd_trainer_loss_value",
        "cotd_worker_duration_ms",
    ):
        assert not m.NAME_PATTERN.match(bad), bad


def test_the_brief_metrics_exist() -> None:
    names = m.metric_names()
    for name in (
        "cotd_worker_tasks_started_total",
        "cotd_worker_tasks_succeeded_total",
        "cotd_worker_tasks_failed_total",
        "cotd_worker_task_duration_seconds",
        "cotd_generator_teacher_requests_total",
        "cotd_generator_teacher_latency_seconds",
        "cotd_generator_teacher_tokens_total",
        "cotd_generator_teacher_overloaded_total",
        "cotd_generator_concurrency_limit",
        "cotd_trainer_tokens_per_second",
        "cotd_trainer_loss",
        "cotd_trainer_peak_memory_bytes",
        "cotd_evaluator_accuracy_ratio",
        "cotd_evaluator_tokens_per_second",
        "cotd_queue_depth_messages",
        "cotd_grid_cells",
    ):
        assert name in names, name
    assert names["cotd_worker_task_duration_seconds"] == "histogram"
    assert max(m.TASK_DURATION_BUCKETS) >= 4 * 3600, "stage durations need buckets of hours"


def test_series_names_include_histogram_and_counter_suffixes() -> None:
    series = m.series_names()
    assert {
        "cotd_worker_task_duration_seconds_bucket",
        "cotd_worker_task_duration_seconds_count",
        "cotd_worker_tasks_started_total",
        "cotd_queue_depth_messages",
    } <= series


def test_track_task_counts_success_and_failure() -> None:
    stage = f"test-{uuid.uuid4().hex[:6]}"
    lab = {"stage": stage}
    with m.track_task(stage):
        assert _value("cotd_worker_in_progress_tasks", lab) == 1
    with pytest.raises(ValueError), m.track_task(stage):
        raise ValueError("boom")
    assert _value("cotd_worker_tasks_started_total", lab) == 2
    assert _value("cotd_worker_tasks_succeeded_total", lab) == 1
    assert _value("cotd_worker_tasks_failed_total", lab) == 1
    assert _value("cotd_worker_task_duration_seconds_count", lab) == 2
    assert _value("cotd_worker_in_progress_tasks", lab) == 0


def test_track_task_counts_celery_retry_as_retried() -> None:
    from celery.exceptions import Retry

    stage = f"test-{uuid.uuid4().hex[:6]}"
    with pytest.raises(Retry), m.track_task(stage):
        raise Retry("again")
    lab = {"stage": stage}
    assert _value("cotd_worker_tasks_retried_total", lab) == 1
    assert _value("cotd_worker_tasks_failed_total", lab) == 0


def test_observe_teacher_request_counts_overload() -> None:
    teacher = f"t-{uuid.uuid4().hex[:6]}"
    m.observe_teacher_request(teacher, "ok", 0.2, prompt_tokens=10, completion_tokens=30)
    m.observe_teacher_request(teacher, "overloaded", 0.01, http_code=429)
    assert _value("cotd_generator_teacher_requests_total", {"teacher": teacher, "status": "ok"}) == 1
    assert _value("cotd_generator_teacher_tokens_total", {"teacher": teacher, "kind": "completion"}) == 30
    assert _value("cotd_generator_teacher_overloaded_total", {"teacher": teacher, "code": "429"}) == 1
    assert _value("cotd_generator_teacher_latency_seconds_count", {"teacher": teacher}) == 2


def test_metrics_server_serves_the_registry() -> None:
    m.set_grid_cells("g-test", {"done": 3, "pending": 1})
    server, _thread = m.start_metrics_server(0, addr="127.0.0.1")
    try:
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10)
            .read()
            .decode()
        )
    finally:
        server.shutdown()
        server.server_close()
    assert 'cotd_grid_cells{grid="g-test",state="done"} 3.0' in body
    assert "process_" in body or "python_info" in body


@pytest.mark.parametrize("addr", ["0.0.0.0", "127.0.0.1"])
def test_healthcheck_probes_the_own_address_not_loopback(addr: str) -> None:
    """`--check` passes for a server other hosts can reach and fails for one bound to loopback only."""
    own = m.own_address()
    if addr == "127.0.0.1" and own == "127.0.0.1":
        pytest.skip("this host's name resolves to 127.0.0.1: loopback and own address coincide")
    server, _thread = m.start_metrics_server(0, addr=addr)
    port = str(server.server_port)
    try:
        assert m.local_url(server.server_port) == f"http://{own}:{port}/metrics"
        expected = 0 if addr == "0.0.0.0" else 1
        assert m.main(["--check", "--port", port]) == expected
        assert m.main(["--check", "--port", port, "--path", "/metrics"]) == expected
        # an explicit URL is probed as given
        assert m.main(["--check", f"http://127.0.0.1:{port}/metrics"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert m.main(["--check", "--port", port]) == 1  # nothing listens any more


def test_queue_collector_is_lazy_and_survives_a_dead_redis() -> None:
    """Registering never connects; a scrape with Redis away yields no sample instead of failing."""
    registry = CollectorRegistry()
    before = _value("cotd_queue_scrape_errors_total")
    m.register_queue_depth_exporter("redis://127.0.0.1:1/0", ["generate"], registry=registry)
    text = generate_latest(registry).decode()
    assert "cotd_queue_depth_messages" in text
    assert 'queue="generate"' not in text
    assert _value("cotd_queue_scrape_errors_total") == before + 1


def _redis_or_skip():
    redis = pytest.importorskip("redis")
    try:
        with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=1):
            pass
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        client.ping()
    except (OSError, redis.RedisError) as exc:
        pytest.skip(f"no Redis answering at 127.0.0.1:{REDIS_PORT} ({exc})")
    return client


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    out: dict[tuple[str, tuple], float] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.integration
def test_queue_collector_reads_real_redis() -> None:
    client = _redis_or_skip()
    q1, q2 = f"cotd-test-{uuid.uuid4().hex[:8]}", f"cotd-test-{uuid.uuid4().hex[:8]}"
    prio = f"{q1}{m.KOMBU_PRIORITY_SEP}6"
    try:
        client.rpush(q1, *[f"msg{i}" for i in range(5)])
        client.rpush(prio, "p1", "p2")
        registry = CollectorRegistry()
        m.register_queue_depth_exporter(REDIS_URL, [q1, q2], registry=registry)
        samples = _scrape(registry)
        assert samples[("cotd_queue_depth_messages", (("queue", q1),))] == 7  # base list + priority list
        assert samples[("cotd_queue_depth_messages", (("queue", q2),))] == 0
        assert ("cotd_queue_unacked_messages", ()) in samples
        client.lpop(q1)
        assert _scrape(registry)[("cotd_queue_depth_messages", (("queue", q1),))] == 6  # read at scrape time
    finally:
        client.delete(q1, q2, prio)
