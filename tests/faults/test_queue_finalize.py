"""Finalize (#18.3): every path ends each cell as done or failed (with the reason) and the grid as
done or failed, so `cotd grid wait` always ends. Real Redis, a moto S3 server (behind a gate that
can refuse writes with S3's own AccessDenied) and worker processes."""

from __future__ import annotations

import json

import pytest

from tests.faults.queue_cluster import noop_grid, queue_cluster
from tests.integration.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 11


@pytest.fixture(scope="module")
def cluster():
    with queue_cluster(REDIS_DB, "cotd-finalize", gate=True, COTD_STAGE_MODE="noop", COTD_SUPERVISE_EVERY_S="0.5") as c:
        c.worker("trainer")
        c.worker("evaluator")
        c.generator = c.worker("generator")
        yield c


def test_results_upload_failure_fails_the_grid(cluster):
    cluster.gate.refused = ["results.json"]
    try:
        res = cluster.submit(noop_grid("finalize-s3", seeds=2))
        assert cluster.wait(res.grid_id, timeout=90) == "failed"
    finally:
        cluster.gate.refused = []
    gs = cluster.state(res.grid_id)
    assert gs.counts()["done"] == 2  # the cells did their work
    meta = gs.meta()
    assert meta["finalized"] == "1" and "results.json not written" in meta["reason"] and "AccessDenied" in meta["reason"]
    assert cluster.ctx.store.get_json(f"grids/{res.grid_id}/results.json") is None
    assert res.grid_id not in {x.decode() for x in cluster.redis.smembers("cotd:grids:open")}
    waited = cluster.cli("grid", "wait", res.grid_id, "--timeout", "10")
    assert waited.returncode == 1 and "results.json not written" in waited.stderr
    st = json.loads(cluster.cli("grid", "status", res.grid_id, "--json").stdout)
    assert st["status"] == "failed" and "results.json not written" in st["reason"]


def test_rejected_message_of_a_live_grid_fails_its_cell(cluster):
    """Version skew: a newer submitter's train message has a field this worker does not know."""
    cluster.generator.stop()  # so that the newer spec is in place before the train message is sent
    res = cluster.submit(noop_grid("finalize-skew", train_size=9))
    gs = cluster.state(res.grid_id)
    aid = next(a for a in gs.hash("specs") if a.startswith("train:"))
    newer = {**json.loads(gs.get("specs", aid)), "priority": 5}
    cluster.redis.hset(gs.k("specs"), aid, json.dumps(newer))  # as written by the newer submitter
    cluster.generator.start()  # it sends the train message once the CoT set exists
    assert cluster.wait(res.grid_id, timeout=90) == "failed"
    (cell,) = gs.cells().items()
    reason = gs.hash("reasons")[cell[0]]
    assert cell[1] == "failed" and "rejected message" in reason and "priority" in reason and "unknown field" in reason
    assert gs.get("art", aid) == "failed" and gs.meta()["finalized"] == "1"
    waited = cluster.cli("grid", "wait", res.grid_id, "--timeout", "10")
    assert waited.returncode == 1 and "priority" in waited.stderr
    dead = [json.loads(x) for x in cluster.redis.lrange("cotd:dead", 0, -1)]
    assert any(d["queue"] == "train" and "priority" in d["reason"] for d in dead)


def test_supervisor_finalizes_a_grid_whose_finalizer_died(cluster):
    res = cluster.submit(noop_grid("finalize-orphan", first_seed=20))
    assert cluster.wait(res.grid_id, timeout=90) == "done"
    gs = cluster.state(res.grid_id)
    # the state a worker leaves when it dies after the last cell ended and before the grid was closed
    cluster.redis.hdel(gs.k("meta"), "finalized", "finished_at")
    cluster.redis.hset(gs.k("meta"), "status", "running")
    cluster.redis.sadd("cotd:grids:open", res.grid_id)
    wait_for(lambda: gs.meta().get("finalized") == "1", 30, "a supervisor to finalize the grid")
    assert gs.status() == "done" and cluster.ctx.store.get_json(f"grids/{res.grid_id}/results.json") is not None
    logs = "".join(w.log() for w in cluster.workers)
    assert f"grid {res.grid_id}: finalizing (its cells have all ended)" in logs
