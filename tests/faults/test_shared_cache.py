"""Shared caches and corrupt artifacts (#18.6), with real Redis, a moto S3 server and worker processes.

- Two trainers share one cache folder (compose's `worker-cache` volume with `--scale trainer=2`) and
  start two trainings at once that need the same tiny student: each builds it in a folder of its
  own, one publication wins, and both trainings complete.
- A checkpoint corrupted in the bucket (same size, other bytes): the next evaluation that fetches it
  fails its cell with the reason and quarantines it; the grid after that trains it again and completes.
"""

from __future__ import annotations

import io
import shutil

import pytest

from tests.faults.queue_cluster import queue_cluster
from tests.integration.test_distributed import tiny_grid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 15
BUCKET = "cotd-shared-cache"


@pytest.fixture(scope="module")
def cluster():
    with queue_cluster(REDIS_DB, BUCKET) as c:
        c.worker("generator")
        c.worker("evaluator")
        shared = {"COTD_CACHE_DIR": str(c.root / "shared-cache")}
        c.trainers = [c.worker("trainer", name=f"trainer-{n}", **shared) for n in "ab"]
        yield c


def test_two_trainers_sharing_a_cache_build_one_student_at_once(cluster):
    res = cluster.submit(tiny_grid("shared-cache", None, [2], 2, 21, max_steps=10))
    gs = cluster.state(res.grid_id)
    assert cluster.wait(res.grid_id, timeout=300) == "done", gs.hash("reasons")
    trained_by = {w.name for w in cluster.trainers if f"grid={res.grid_id} key=" in w.log()}
    assert trained_by == {"trainer-a", "trainer-b"}  # both ran a training at the same time
    assert len(cluster.ctx.store.keys("models")) == 1  # the student both needed, published once
    scratch = cluster.root / "shared-cache" / BUCKET / ".work" / "models"
    assert not any(scratch.rglob("attempt-*"))  # every build folder was removed


def test_a_corrupt_checkpoint_is_quarantined_then_built_again(cluster):
    store = cluster.ctx.store
    doc = tiny_grid("corrupt", None, [3], 1, 22, max_steps=6)
    first = cluster.submit(doc)
    assert cluster.wait(first.grid_id, timeout=300) == "done"
    key = next(a.split(":", 1)[1] for a in cluster.state(first.grid_id).hash("art") if a.startswith("train:"))
    m = store.manifest("checkpoints", key)
    weights = next(f for f in m["files"] if f["path"].endswith(".safetensors"))
    name = store.object_name("checkpoints", key, m, weights["path"])
    store.client.put_object(BUCKET, name, io.BytesIO(b"\0" * weights["size"]), weights["size"])  # same size
    shutil.rmtree(cluster.root / "worker-cache" / BUCKET / "checkpoints" / key)  # the evaluator downloads it

    doc["evaluation"] = {**doc["evaluation"], "test_size": 12}  # a new evaluation of the same checkpoint
    second = cluster.submit(doc)
    gs2 = cluster.state(second.grid_id)
    assert cluster.wait(second.grid_id, timeout=300) == "failed"
    reasons = " ".join(gs2.hash("reasons").values())
    assert "do not match the manifest" in reasons and "quarantined" in reasons, reasons
    assert store.manifest("checkpoints", key) is None  # no longer published
    assert store.get_json(f"quarantine/checkpoints/{key}/{m['publication']}.json") is not None

    third = cluster.submit(doc)
    gs3 = cluster.state(third.grid_id)
    assert cluster.wait(third.grid_id, timeout=300) == "done", gs3.hash("reasons")
    assert gs3.stage_counts()["train"].get("computed") == 1  # trained again
    again = store.manifest("checkpoints", key)
    assert again["publication"] != m["publication"]
    assert store.object_names(f"checkpoints/{key}/") == store.artifact_objects("checkpoints", key, again)
