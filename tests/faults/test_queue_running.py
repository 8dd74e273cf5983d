"""A running task seen and stopped from outside: `celery inspect active` answers while a trainer
trains (#13.9), `cotd grid cancel` stops it within seconds (#18.8), and the workers send task
events for flower when `COTD_TASK_EVENTS` is on (#13.10). Real Redis, moto S3, worker processes,
Celery's own CLI and event receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from tests.faults.queue_cluster import queue_cluster
from tests.integration.services import REPO, wait_for
from tests.integration.test_distributed import tiny_grid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 12
BUCKET = "cotd-running"


@pytest.fixture(scope="module")
def cluster():
    env = {"COTD_TASK_EVENTS": "true", "COTD_CANCEL_CHECK_S": "0.5", "COTD_LEASE_TTL_S": "3"}
    with queue_cluster(REDIS_DB, BUCKET, **env) as c:
        c.trainer = c.worker("trainer")
        c.worker("generator")
        c.worker("evaluator", COTD_STAGE_MODE="noop")
        yield c


@pytest.fixture(scope="module")
def training(cluster):
    """A grid whose one training runs far longer than these tests: (grid id, train artifact, task id)."""
    from services.trainer.loop import resume_step

    res = cluster.submit(tiny_grid("running-long", None, [3], 1, 11, max_steps=5000))
    gs = cluster.state(res.grid_id)
    aid = next(a for a in gs.hash("art") if a.startswith("train:"))
    key = aid.split(":", 1)[1]
    state_dir = cluster.root / "worker-cache" / BUCKET / ".work" / "checkpoints" / key / "state"
    wait_for(lambda: resume_step(state_dir) >= 5, 180, "the training to be under way")
    return res.grid_id, aid, gs.get("tasks", aid)


def _inspect(cluster, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "celery", "-A", "shared.celery_app", "inspect", *args, "--json", "--timeout", "5"]
    return subprocess.run(cmd, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=90)


def test_inspect_active_answers_during_training(cluster, training):
    gid, aid, task_id = training
    out = _inspect(cluster, "active")
    assert out.returncode == 0, out.stderr
    active = json.loads(out.stdout)
    assert len(active) == 3, active  # every worker answers, the busy trainer too
    (trainer,) = [name for name in active if name.startswith("trainer-")]
    (task,) = active[trainer]
    assert task["id"] == task_id and task["name"] == "cotd.train" and task["args"][0]["grid_id"] == gid
    assert cluster.state(gid).get("art", aid) == "running"  # still training while it answered


def test_cancel_stops_the_running_training(cluster, training):
    gid, aid, _ = training
    key = aid.split(":", 1)[1]
    out = cluster.cli("grid", "cancel", gid)
    assert out.returncode == 0, out.stderr
    t0 = time.monotonic()
    line = f"grid={gid} key={key} stage=train: stopped, the grid was cancelled"
    wait_for(lambda: line in cluster.trainer.log(), 20, "the trainer to stop", interval=0.1)
    print(f"training stopped {time.monotonic() - t0:.1f}s after the cancel")
    gs = cluster.state(gid)
    assert not cluster.redis.exists(f"cotd:lease:checkpoints:{key}")
    assert gs.get("art", aid) == "cancelled" and set(gs.cells().values()) == {"cancelled"}
    assert cluster.ctx.store.manifest("checkpoints", key) is None  # nothing published
    assert cluster.ctx.store.object_names(f"checkpoints/{key}/") == []
    wait_for(lambda: gs.meta().get("finalized") == "1", 20, "the grid to be closed")
    assert gs.status() == "cancelled" and cluster.ctx.store.get_json(f"grids/{gid}/results.json") is not None
    waited = cluster.cli("grid", "wait", gid, "--timeout", "10")
    assert waited.returncode == 1 and "cancelled" in waited.stderr
    out = _inspect(cluster, "active")
    trainer = next(v for k, v in json.loads(out.stdout).items() if k.startswith("trainer-"))
    assert trainer == []  # the worker is free again


def test_workers_send_task_events(cluster, training):
    events: list[dict] = []
    app = cluster.ctx.app
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": events.append})
        th = threading.Thread(target=lambda: recv.capture(limit=None, timeout=None, wakeup=False), daemon=True)
        th.start()
        wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in events), 30, "a worker heartbeat")
        res = cluster.submit(tiny_grid("running-events", None, [1], 1, 12, max_steps=2))
        assert cluster.wait(res.grid_id, timeout=180) == "done"
        ids = set(cluster.state(res.grid_id).hash("tasks").values())
        assert len(ids) == 3

        def seen(kind: str) -> set[str]:
            return {e["uuid"] for e in events if e["type"] == kind}

        wait_for(lambda: ids <= seen("task-succeeded"), 20, "task-succeeded events")
        recv.should_stop = True
    assert ids <= seen("task-received") and ids <= seen("task-started")
    by_id = {e["uuid"]: e for e in events if e["type"] == "task-received"}
    assert {by_id[i]["name"] for i in ids} == {"cotd.generate", "cotd.train", "cotd.evaluate"}
    th.join(timeout=10)
