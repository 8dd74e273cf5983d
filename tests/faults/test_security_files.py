"""Issue #18.4: what a queue message may make a worker read, write and run.

- files a grid names are read only under the worker's `COTD_DATA_ROOTS`;
- a file path inside a manifest never writes outside the cache;
- `trust_remote_code: true` is honoured only where `COTD_ALLOW_REMOTE_CODE` allows it.

Real Redis, a moto S3 server and `cotd worker` processes (a real generator; no-op trainer and evaluator,
since the policy is checked before any stage code runs).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from shared.datasets.splits import load_split
from shared.grid import expand, load_grid
from shared.orchestration.context import Context
from shared.orchestration.state import GridState
from shared.orchestration.submit import submit_grid
from shared.specs import DatasetRef
from tests.integration.services import (
    Worker,
    client_settings,
    cotd_env,
    moto_server,
    redis_db,
    scratch_dir,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 5
BUCKET = "cotd-sec-files"
DATASET = {"name": "arith", "train_size": 4, "test_size": 2}


class Cluster:
    """A real generator (data roots: `<root>/data`), no-op trainer and evaluator, and a submitter."""

    def __init__(self, root, url: str, endpoint: str) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir()
        self.env = cotd_env(url, endpoint, BUCKET, root / "worker-cache", COTD_DATA_ROOTS=str(self.data))
        self.ctx = Context(client_settings(url, endpoint, BUCKET, root / "client-cache"))
        noop = {**self.env, "COTD_STAGE_MODE": "noop"}
        self.workers = {
            "generator": Worker("generator", self.env, root),
            "trainer": Worker("trainer", noop, root),
            "evaluator": Worker("evaluator", noop, root),
        }

    def write(self, name: str, **fields):
        """A grid file of one cell (procedural teacher, tiny student on arith), with `fields` replaced."""
        doc = {
            "name": name,
            "datasets": [DATASET],
            "teachers": [{"name": "proc", "kind": "procedural"}],
            "levels": [1],
            "students": [{"name": "xs", "model": "tiny:xs"}],
            **fields,
        }
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def grid(self, name: str, **fields) -> tuple[str, object]:
        """Submit a one-cell grid: its id and its cell."""
        grid = load_grid(self.write(name, **fields))
        return submit_grid(grid, self.ctx).grid_id, expand(grid)[0]

    def state(self, grid_id: str) -> GridState:
        return GridState(self.ctx.redis, grid_id)

    def rejected(self, role: str, grid_id: str) -> str:
        """The worker's log line that rejected a message of this grid (waits for it)."""
        w = self.workers[role]

        def line() -> str | None:
            gs = self.state(grid_id)
            ids = set(gs.hash("tasks").values())
            return next(
                (ln for ln in w.log().splitlines() if "rejected message" in ln and any(i in ln for i in ids)),
                None,
            )

        wait_for(lambda: line() is not None, 60, f"the {role} to reject a message of {grid_id}", interval=0.3)
        return line()


@pytest.fixture(scope="module")
def cluster():
    url = redis_db(REDIS_DB)
    with scratch_dir("cotd-sec-files-") as root, moto_server(root) as endpoint:
        c = Cluster(root, url, endpoint)
        try:
            for w in c.workers.values():
                w.start()
            yield c
        finally:
            for w in c.workers.values():
                w.stop()


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
    gid, cell = cluster.grid("sec-inside", teachers=[{"name": "rec", "kind": "recorded", "files": files}])
    wait_for(lambda: cluster.ctx.store.exists("cotsets", cell.cot.key), 60, "the CoT set", interval=0.3)
    cot = (cluster.ctx.store.fetch("cotsets", cell.cot.key) / "cot.jsonl").read_text()
    assert cot.count("\n") == 4 and "Step 1." in cot


def test_a_grid_file_outside_the_data_roots_is_never_opened(cluster):
    private = cluster.root / "private"
    private.mkdir()
    files = recorded_file(
        private / "secret_level1.json", "Private"
    )  # the submitter can read it; the worker must not
    gid, cell = cluster.grid("sec-outside", teachers=[{"name": "rec", "kind": "recorded", "files": files}])
    line = cluster.rejected("generator", gid)
    assert f"teacher rec.files: {private / 'secret_level1.json'} is outside the worker's data roots" in line
    assert f"(COTD_DATA_ROOTS: {cluster.data})" in line
    assert wait_status(cluster, gid) == "failed"  # the cell fails with the reason; the grid does not hang
    assert "is outside the worker's data roots" in cluster.state(gid).hash("reasons")[cell.key]
    assert not cluster.ctx.store.exists("cotsets", cell.cot.key)


def test_the_issue_example_etc_hostname_is_refused(cluster):
    gid, cell = cluster.grid(
        "sec-hostname", teachers=[{"name": "rec", "kind": "recorded", "files": "/etc/hostname"}]
    )
    assert "teacher rec.files: /etc/hostname is outside the worker's data roots" in cluster.rejected(
        "generator", gid
    )
    assert not cluster.ctx.store.exists("cotsets", cell.cot.key)


def test_trust_remote_code_is_refused_unless_the_worker_allows_it(cluster):
    student = {"name": "rc", "model": "org/remote-code-model", "trust_remote_code": True}
    gid, cell = cluster.grid("sec-remote", students=[student])
    line = cluster.rejected("trainer", gid)
    assert "student rc: trust_remote_code is not allowed on this worker (COTD_ALLOW_REMOTE_CODE)" in line
    assert wait_status(cluster, gid) == "failed"
    assert "trust_remote_code is not allowed" in cluster.state(gid).hash("reasons")[cell.key]
    assert cluster.ctx.store.exists("cotsets", cell.cot.key)  # generation runs no student code
    assert not cluster.ctx.store.exists("checkpoints", cell.checkpoint.key)
    # an operator who allows it: a trainer with COTD_ALLOW_REMOTE_CODE=true takes the same work
    cluster.workers["trainer"].stop()
    allowing = Worker(
        "trainer",
        {**cluster.workers["trainer"].env, "COTD_ALLOW_REMOTE_CODE": "true"},
        cluster.root,
        name="trainer-rc",
    )
    cluster.workers["trainer"] = allowing.start()
    cluster.grid("sec-remote-allowed", students=[student])
    wait_for(
        lambda: cluster.ctx.store.exists("checkpoints", cell.checkpoint.key),
        60,
        "the checkpoint",
        interval=0.3,
    )


def wait_status(cluster: Cluster, grid_id: str) -> str:
    gs = cluster.state(grid_id)
    wait_for(lambda: gs.status() in ("done", "failed", "cancelled"), 90, f"grid {grid_id}", interval=0.3)
    return gs.status()


def test_a_manifest_path_cannot_write_outside_the_cache(cluster):
    """A checkpoint in the bucket whose manifest names an absolute path: the evaluator's download refuses it."""
    escape = cluster.root / "escaped.txt"
    data = b"written outside the cache"
    # the planted checkpoint: the key of a cell not built yet, a manifest naming an absolute file path
    path = cluster.write("sec-manifest", seeds=[8])
    target = expand(load_grid(path))[0]
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
    res = submit_grid(load_grid(path), cluster.ctx)
    assert res.enqueued == {
        "generate": 0,
        "train": 0,
        "evaluate": 1,
    }  # the planted checkpoint counts as built
    assert wait_status(cluster, res.grid_id) == "failed"
    reason = next(iter(cluster.state(res.grid_id).hash("reasons").values()))
    assert "UnsafePath" in reason and "must stay inside the artifact" in reason
    assert not escape.exists()
    assert not store.exists("evals", target.key)
