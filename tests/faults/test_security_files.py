"""Issue #18.4: what a queue message may make a worker read, write and run.

- files a grid names are read only under the worker's `COTD_DATA_ROOTS`;
- a file path inside a manifest never writes outside the cache;
- `trust_remote_code: true` is honoured only where `COTD_ALLOW_REMOTE_CODE` allows it.

Real Redis, a moto S3 server and `cotd worker` processes (a real generator; no-op trainer and evaluator,
since the policy is checked before any stage code runs). A refused message fails its cell with the reason.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from shared.datasets.splits import load_split
from shared.grid import Cell, expand, parse_grid
from shared.specs import DatasetRef
from tests.faults.queue_cluster import QueueCluster, noop_grid, queue_cluster
from tests.integration.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 5
BUCKET = "cotd-sec-files"
DATASET = {"name": "arith", "train_size": 4, "test_size": 2}


@pytest.fixture(scope="module")
def cluster():
    """A real generator (data roots: `<root>/data`), no-op trainer and evaluator, and a submitter."""
    with queue_cluster(REDIS_DB, BUCKET) as c:
        c.data = c.root / "data"
        c.data.mkdir()
        c.worker("generator", name="generator", COTD_DATA_ROOTS=str(c.data))
        c.worker("trainer", name="trainer", COTD_STAGE_MODE="noop")
        c.worker("evaluator", name="evaluator", COTD_STAGE_MODE="noop")
        yield c


def doc(name: str, **fields) -> dict:
    """A one-cell grid (procedural teacher, tiny student on arith) with `fields` replaced."""
    return {
        **noop_grid(name),
        "datasets": [DATASET],
        "students": [{"name": "xs", "model": "tiny:xs"}],
        **fields,
    }


def submit(c: QueueCluster, name: str, **fields) -> tuple[str, Cell]:
    """Submit a one-cell grid: its id and its cell."""
    d = doc(name, **fields)
    return c.submit(d).grid_id, expand(parse_grid(d))[0]


def rejected(c: QueueCluster, role: str, grid_id: str) -> str:
    """The log line in which the worker named `role` rejected a message of this grid (waits for it)."""
    w = next(w for w in c.workers if w.name == role)

    def line() -> str | None:
        ids = set(c.state(grid_id).hash("tasks").values())
        return next(
            (ln for ln in w.log().splitlines() if "rejected message" in ln and any(i in ln for i in ids)),
            None,
        )

    wait_for(lambda: line() is not None, 60, f"the {role} to reject a message of {grid_id}", interval=0.3)
    return line()


def recorded_file(path, text: str) -> str:
    """A recorded teacher's level-1 file at `path` (its rationales say `text`); returns the files template."""
    rows = [
        {"instruction": q.text, "input": "", "output": f"{text}. The answer is {q.gold}."}
        for q in load_split(DatasetRef(**DATASET), "train")
    ]
    path.write_text(json.dumps(rows))
    return str(path).replace("level1", "level{level}")


def test_a_grid_file_under_the_data_roots_is_read(cluster):
    files = recorded_file(cluster.data / "rec_level1.json", "Step 1")
    gid, cell = submit(cluster, "sec-inside", teachers=[{"name": "rec", "kind": "recorded", "files": files}])
    wait_for(lambda: cluster.ctx.store.exists("cotsets", cell.cot.key), 60, "the CoT set", interval=0.3)
    cot = (cluster.ctx.store.fetch("cotsets", cell.cot.key) / "cot.jsonl").read_text()
    assert cot.count("\n") == 4 and "Step 1." in cot


def test_a_grid_file_outside_the_data_roots_is_never_opened(cluster):
    private = cluster.root / "private"
    private.mkdir()
    files = recorded_file(
        private / "secret_level1.json", "Private"
    )  # the submitter reads it, the worker must not
    gid, cell = submit(cluster, "sec-outside", teachers=[{"name": "rec", "kind": "recorded", "files": files}])
    line = rejected(cluster, "generator", gid)
    assert f"teacher rec.files: {private / 'secret_level1.json'} is outside the worker's data roots" in line
    assert f"(COTD_DATA_ROOTS: {cluster.data})" in line
    assert cluster.wait(gid) == "failed"  # the cell fails with the reason; the grid does not hang
    assert "is outside the worker's data roots" in cluster.state(gid).hash("reasons")[cell.key]
    assert not cluster.ctx.store.exists("cotsets", cell.cot.key)


def test_the_issue_example_etc_hostname_is_refused(cluster):
    gid, cell = submit(
        cluster, "sec-hostname", teachers=[{"name": "rec", "kind": "recorded", "files": "/etc/hostname"}]
    )
    line = rejected(cluster, "generator", gid)
    assert "teacher rec.files: /etc/hostname is outside the worker's data roots" in line
    assert not cluster.ctx.store.exists("cotsets", cell.cot.key)


def test_trust_remote_code_is_refused_unless_the_worker_allows_it(cluster):
    student = {"name": "rc", "model": "org/remote-code-model", "trust_remote_code": True}
    gid, cell = submit(cluster, "sec-remote", students=[student])
    line = rejected(cluster, "trainer", gid)
    assert "student rc: trust_remote_code is not allowed on this worker (COTD_ALLOW_REMOTE_CODE)" in line
    assert cluster.wait(gid) == "failed"
    assert "trust_remote_code is not allowed" in cluster.state(gid).hash("reasons")[cell.key]
    assert cluster.ctx.store.exists("cotsets", cell.cot.key)  # generation runs no student code
    assert not cluster.ctx.store.exists("checkpoints", cell.checkpoint.key)
    # an operator who allows it: a trainer with COTD_ALLOW_REMOTE_CODE=true takes the same work
    next(w for w in cluster.workers if w.name == "trainer").stop()
    cluster.worker("trainer", name="trainer-rc", COTD_STAGE_MODE="noop", COTD_ALLOW_REMOTE_CODE="true")
    submit(cluster, "sec-remote-allowed", students=[student])
    wait_for(
        lambda: cluster.ctx.store.exists("checkpoints", cell.checkpoint.key),
        60,
        "the checkpoint",
        interval=0.3,
    )


def test_a_manifest_path_cannot_write_outside_the_cache(cluster):
    """A checkpoint in the bucket whose manifest names an absolute path: the evaluator's download refuses it."""
    escape = cluster.root / "escaped.txt"
    data = b"written outside the cache"
    # the planted checkpoint: the key of a cell not built yet, a manifest naming an absolute file path
    grid = doc("sec-manifest", seeds=[8])
    target = expand(parse_grid(grid))[0]
    store = cluster.ctx.store
    prefix = f"checkpoints/{target.checkpoint.key}"
    store._put_bytes(f"{prefix}/{escape}", data, "text/plain")
    manifest = {
        "kind": "checkpoints",
        "key": target.checkpoint.key,
        "published_at": 1.0,
        "files": [{"path": str(escape), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
    }
    store._put_bytes(f"{prefix}/manifest.json", json.dumps(manifest).encode())
    res = cluster.submit(grid)
    assert res.enqueued == {
        "generate": 0,
        "train": 0,
        "evaluate": 1,
    }  # the planted checkpoint counts as built
    assert cluster.wait(res.grid_id) == "failed"
    reason = next(iter(cluster.state(res.grid_id).hash("reasons").values()))
    assert "UnsafePath" in reason and "must stay inside the artifact" in reason
    assert not escape.exists()
    assert not store.exists("evals", target.key)
