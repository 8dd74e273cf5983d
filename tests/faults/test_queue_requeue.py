"""Lapsed leases (#18.2): a SIGKILLed trainer's task is enqueued again long before the visibility
timeout and completes, every artifact once; a healthy long task is never sent twice.

Real Redis, a moto S3 server and worker processes; the visibility timeout is an hour here, so only
the supervisor can bring the work back within the test's time.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.queue_cluster import queue_cluster
from tests.integration.services import wait_for
from tests.integration.test_distributed import tiny_grid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 10
BUCKET = "cotd-requeue"
ENV = {
    "COTD_VISIBILITY_TIMEOUT_S": "3600",
    "COTD_LEASE_TTL_S": "2",
    "COTD_REQUEUE_AFTER_S": "5",
    "COTD_SUPERVISE_EVERY_S": "0.5",
}


@pytest.fixture(scope="module")
def cluster():
    with queue_cluster(REDIS_DB, BUCKET, **ENV) as c:
        c.worker("generator")
        c.worker("evaluator", COTD_STAGE_MODE="noop")  # evaluation is not what is tested here
        c.trainers = [c.worker("trainer", name="trainer-a"), c.worker("trainer", name="trainer-b")]
        yield c


def _train_aid(gs) -> str:
    return next(a for a in gs.hash("art") if a.startswith("train:"))


def _holder(cluster, key: str):
    """The trainer whose process holds the lease on checkpoint `key`."""
    token = cluster.redis.get(f"cotd:lease:checkpoints:{key}")
    pid = int(token.decode().split(":")[1]) if token else None
    return next((w for w in cluster.trainers if w.proc and w.proc.pid == pid), None)


def _started(cluster, gid: str, key: str) -> int:
    line = f"grid={gid} key={key} stage=train: started"
    return sum(w.log().count(line) for w in cluster.workers)


def _assert_built_once(cluster, gs) -> None:
    stages = gs.stage_counts()
    assert {s: stages[s].get("computed") for s in stages} == {"generate": 1, "train": 1, "evaluate": 1}
    store = cluster.ctx.store
    for kind in ("cotsets", "checkpoints", "evals"):
        for key in store.keys(kind):  # each published artifact is exactly its manifest's files
            man = store.manifest(kind, key)
            assert store.object_names(f"{kind}/{key}/") == store.artifact_objects(kind, key, man)


def test_killed_trainer_is_requeued_and_completes(cluster):
    from services.trainer.loop import resume_step

    res = cluster.submit(tiny_grid("requeue-kill", None, [3], 1, 5, max_steps=40))
    gs = cluster.state(res.grid_id)
    aid = _train_aid(gs)
    key = aid.split(":", 1)[1]
    state_dir = cluster.root / "worker-cache" / BUCKET / ".work" / "checkpoints" / key / "state"
    wait_for(lambda: resume_step(state_dir) >= 5 and _holder(cluster, key) is not None, 180, "training under way")
    victim = _holder(cluster, key)
    victim.kill()
    t_kill = time.monotonic()
    assert gs.get("art", aid) == "running" and cluster.ctx.store.manifest("checkpoints", key) is None

    survivor = next(w for w in cluster.trainers if w is not victim)
    wait_for(lambda: _holder(cluster, key) is survivor, 60, "the survivor to take the training over")
    recovered_s = time.monotonic() - t_kill
    assert cluster.wait(res.grid_id, timeout=240) == "done", gs.hash("reasons")
    print(f"restart {recovered_s:.1f}s after the kill (visibility timeout 3600 s)")

    logs = "".join(w.log() for w in cluster.workers)
    assert f"grid={res.grid_id} artifact={aid}: lease lapsed" in logs
    m = cluster.ctx.store.manifest("checkpoints", key)
    assert m["train"]["resumed_from"] >= 5  # it went on from the dead worker's scratch state
    assert m["train"]["steps"] == 40
    _assert_built_once(cluster, gs)
    victim.start()  # the other tests have two trainers


def test_healthy_long_task_is_not_sent_twice(cluster):
    # long enough to outlive the requeue delay several times over, even on a fast idle machine
    res = cluster.submit(tiny_grid("requeue-healthy", None, [2], 1, 7, max_steps=1500, save_every_steps=100))
    gs = cluster.state(res.grid_id)
    aid = _train_aid(gs)
    key = aid.split(":", 1)[1]
    t0 = time.monotonic()
    assert cluster.wait(res.grid_id, timeout=240) == "done", gs.hash("reasons")
    assert time.monotonic() - t0 > 2 * float(ENV["COTD_REQUEUE_AFTER_S"])  # it did outlive the requeue delay
    assert _started(cluster, res.grid_id, key) == 1
    assert f"grid={res.grid_id} artifact={aid}: lease lapsed" not in "".join(w.log() for w in cluster.workers)
    _assert_built_once(cluster, gs)


def test_lapsed_decision():
    from shared.orchestration.supervisor import lapsed

    running = ["train:a", "train:b", "train:c"]
    seen = {"train:b": "100.0", "train:c": "108.0", "train:gone": "90.0"}
    has = {"train:a": False, "train:b": False, "train:c": False}
    requeue, mark, drop = lapsed(running, seen, has, now=110.0, wait_s=5)
    assert requeue == ["train:b"] and mark == {"train:a": 110.0} and drop == ["train:gone"]
    requeue, mark, drop = lapsed(running, seen, {**has, "train:b": True}, now=110.0, wait_s=5)
    assert requeue == [] and "train:b" in drop  # its lease came back: a live task
