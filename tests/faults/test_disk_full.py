"""A full disk (#18.7): a trainer whose cache disk fills up mid-task removes its scratch, stops taking
tasks, and the training is retried on another trainer, which completes it; every artifact once.

Real Redis, a moto S3 server and worker processes; the full disk is a 1 MiB tmpfs mounted as one
trainer's cache (root only: the test skips, saying so, where it cannot mount one).
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.faults.queue_cluster import queue_cluster
from tests.integration.services import wait_for
from tests.integration.test_distributed import tiny_grid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 14
BUCKET = "cotd-diskfull"


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: room for the tiny student, not for its training state."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_sends_the_task_to_another_trainer(small_disk):
    from celery import Celery

    env = {"COTD_RETRY_BACKOFF_S": "1", "COTD_SUPERVISE_EVERY_S": "0.5"}
    with queue_cluster(REDIS_DB, BUCKET, **env) as c:
        c.worker("generator")
        c.worker("evaluator", COTD_STAGE_MODE="noop")  # evaluation is not what is tested here
        full = c.worker(
            "trainer", name="trainer-full", COTD_CACHE_DIR=str(small_disk), COTD_DISK_FULL_PAUSE_S="600", COTD_MIN_FREE_MB="0"
        )
        res = c.submit(tiny_grid("disk-full", None, [2], 1, 11, max_steps=30, save_every_steps=5))
        gs = c.state(res.grid_id)
        aid = next(a for a in gs.hash("art") if a.startswith("train:"))
        key = aid.split(":", 1)[1]
        wait_for(lambda: "disk full: removed the scratch" in full.log(), 240, "the trainer to run out of disk")
        assert not (small_disk / BUCKET / ".work" / "checkpoints" / key).exists()  # no scratch left behind
        assert gs.status() == "running" and gs.get("art", aid) in ("queued", "running")  # retried, not failed

        # the full worker no longer consumes its queue, as celery's own inspect shows
        app = Celery(broker=c.env["COTD_REDIS_URL"])
        host = f"trainer-{full.proc.pid}@{socket.gethostname()}"
        wait_for(lambda: (app.control.inspect(destination=[host], timeout=3).active_queues() or {}).get(host) == [],
                 60, "the full trainer to stop consuming")  # fmt: skip

        healthy = c.worker("trainer", name="trainer-ok")
        assert c.wait(res.grid_id, timeout=300) == "done", gs.hash("reasons")
        assert f"grid={res.grid_id} key={key} stage=train: started" in healthy.log()
        stages = gs.stage_counts()
        assert {s: stages[s].get("computed") for s in stages} == {"generate": 1, "train": 1, "evaluate": 1}
        m = c.ctx.store.manifest("checkpoints", key)
        assert c.ctx.store.object_names(f"checkpoints/{key}/") == c.ctx.store.artifact_objects("checkpoints", key, m)
        assert not (small_disk / BUCKET / ".work" / "checkpoints" / key).exists()
