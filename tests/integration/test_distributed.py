"""Distributed mode end to end: real Redis, a moto S3 server, real `cotd worker` processes.

One set of workers serves the whole module. Redis db 13 is used (and flushed) by these tests only.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.services import (
    COTD,
    Worker,
    client_settings,
    cotd_env,
    moto_server,
    redis_db,
    scratch_dir,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 13
BUCKET = "cotd-dist"
GRID_TIMEOUT_S = 240
TIMED = ("train_summary.json", "train_log.jsonl", "metrics.json")  # hold wall times; compared by field instead
METRICS = ("accuracy", "ci_low", "ci_high", "n", "extraction_failure_rate", "mean_output_tokens")


def tiny_grid(name: str, rec_files: str | None, levels: list[int], students: int, seed: int, **training) -> dict:
    """A grid of tiny students on `arith`, small enough for a loaded 2-core machine."""
    teachers = [{"name": "proc", "kind": "procedural"}]
    if rec_files:
        teachers.append({"name": "rec", "kind": "recorded", "files": rec_files})
    studs = [{"name": "xs-a", "model": "tiny:xs"}, {"name": "xs-b", "model": "tiny:xs", "training": {"lr": 0.003}}]
    return {
        "name": name,
        "datasets": [{"name": "arith", "train_size": 64, "test_size": 20}],
        "teachers": teachers,
        "levels": levels,
        "students": studs[:students],
        "training": {
            "max_steps": 20,
            "micro_batch_size": 8,
            "global_batch_size": 8,
            "lr": 0.006,
            "warmup_steps": 2,
            "from_scratch": True,
            "save_every_steps": 5,
            **training,
        },
        "evaluation": {"test_size": 20, "max_new_tokens": 40, "batch_size": 20},
        "seeds": [seed],
    }


class Cluster:
    """Moto S3 + the three workers + a submitting context, for the tests of this module."""

    def __init__(self, root: Path, redis_url: str, endpoint: str) -> None:
        from shared.orchestration.context import Context

        self.root = root
        self.redis_url = redis_url
        self.endpoint = endpoint
        self.env = cotd_env(
            redis_url,
            endpoint,
            BUCKET,
            root / "worker-cache",
            COTD_VISIBILITY_TIMEOUT_S="10",
            COTD_LEASE_TTL_S="3",
            COTD_DATA_ROOTS=str(root),  # the recorded-teacher files of these grids
        )
        self.settings = client_settings(redis_url, endpoint, BUCKET, root / "client-cache")
        self.ctx = Context(self.settings)
        self.workers = {
            "generator": Worker("generator", self.env, root, concurrency=2),
            "trainer": Worker("trainer", self.env, root),
            "evaluator": Worker("evaluator", self.env, root),
        }

    def write_grid(self, doc: dict) -> Path:
        path = self.root / f"{doc['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def submit(self, path: Path):
        from shared.grid import load_grid
        from shared.orchestration.submit import submit_grid

        return submit_grid(load_grid(path), self.ctx)

    def state(self, grid_id: str):
        from shared.orchestration.state import GridState

        return GridState(self.ctx.redis, grid_id)

    def wait(self, grid_id: str, timeout: float = GRID_TIMEOUT_S) -> str:
        gs = self.state(grid_id)
        try:
            wait_for(lambda: gs.status() in ("done", "failed", "cancelled"), timeout, f"grid {grid_id}", interval=0.5)
        except AssertionError:
            logs = "\n".join(f"--- {n}\n{w.log()[-2500:]}" for n, w in self.workers.items())
            raise AssertionError(f"grid {grid_id} not finished: {gs.counts()} {gs.stage_counts()}\n{logs}") from None
        return gs.status()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*COTD, *args], env=self.env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def cluster():
    url = redis_db(REDIS_DB)
    with scratch_dir("cotd-dist-") as root, moto_server(root) as endpoint:
        c = Cluster(root, url, endpoint)
        try:
            for w in c.workers.values():
                w.start()
            yield c
        finally:
            for w in c.workers.values():
                w.stop()


@pytest.fixture(scope="module")
def main_grid(cluster):
    """The 2 teachers x 2 levels x 2 students grid, run once in distributed mode."""
    from shared.datasets.splits import load_split
    from shared.specs import DatasetRef

    qs = load_split(DatasetRef(name="arith", train_size=64), "train")
    for lv in (1, 6):
        rows = [{"instruction": q.text, "input": "", "output": "Work it out. " * lv + f"The answer is {q.gold}."} for q in qs]
        (cluster.root / f"rec_level{lv}.json").write_text(json.dumps(rows))
    path = cluster.write_grid(tiny_grid("dist-main", str(cluster.root / "rec_level{level}.json"), [1, 6], 2, 1))
    t0 = time.perf_counter()
    res = cluster.submit(path)
    status = cluster.wait(res.grid_id)
    return {"path": path, "submit": res, "status": status, "seconds": time.perf_counter() - t0}


def _rows(doc: dict) -> dict[str, dict]:
    return {c["eval_key"]: c for c in doc["cells"]}


def test_grid_runs_distributed_like_embedded(cluster, main_grid):
    import torch

    from shared.artifacts import LocalStore
    from shared.grid import load_grid
    from shared.orchestration.embedded import run_grid

    res = main_grid["submit"]
    assert main_grid["status"] == "done", cluster.state(res.grid_id).hash("reasons")
    assert res.cells == 8 and res.cached_cells == 0
    assert res.enqueued == {"generate": 4, "train": 0, "evaluate": 0}  # the rest follows from the workers
    stages = cluster.state(res.grid_id).stage_counts()
    # de-duplicated: 4 CoT sets for 8 cells, each artifact built exactly once
    assert {s: (stages[s]["total"], stages[s].get("computed")) for s in stages} == {
        "generate": (4, 4),
        "train": (8, 8),
        "evaluate": (8, 8),
    }
    dist = cluster.ctx.store.get_json(f"grids/{res.grid_id}/results.json")
    assert dist is not None and cluster.ctx.store.get_json(f"grids/{res.grid_id}/grid.json")["name"] == "dist-main"

    torch.set_num_threads(1)  # as in the workers (OMP_NUM_THREADS=1)
    emb_dir = cluster.root / "embedded"
    emb = run_grid(load_grid(main_grid["path"]), emb_dir, echo=lambda _: None, device="cpu", jobs=1)
    a, b = _rows(dist), _rows(emb)
    assert set(a) == set(b) and len(a) == 8
    for key, row in a.items():
        for f in ("cot_key", "checkpoint_key", "eval_key", "teacher", "level", "student", "seed", "cot_stats", *METRICS):
            assert row[f] == b[key][f], (f, row, b[key])
    local = LocalStore(emb_dir / "artifacts")
    for row in a.values():  # bit-identical weights and predictions
        for kind, key in (("checkpoints", row["checkpoint_key"]), ("evals", row["eval_key"])):
            files = {f["path"]: f["sha256"] for f in cluster.ctx.store.manifest(kind, key)["files"] if f["path"] not in TIMED}
            assert files == {f["path"]: f["sha256"] for f in local.manifest(kind, key)["files"] if f["path"] not in TIMED}

    out = cluster.cli("grid", "status", res.grid_id, "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["status"] == "done" and st["counts"]["done"] == 8 and len(st["cells"]) == 8
    assert cluster.cli("grid", "wait", res.grid_id, "--timeout", "5").returncode == 0
    rep = cluster.cli("report", res.grid_id, "--out", str(cluster.root / "report"))
    assert rep.returncode == 0, rep.stderr
    assert json.loads((cluster.root / "report" / "results.json").read_text())["cells"] == dist["cells"]
    assert (cluster.root / "report" / "report.md").exists()


def test_resubmit_is_cached(cluster, main_grid):
    from shared.orchestration.state import executions

    trainer = cluster.workers["trainer"]
    before_exec = executions(cluster.ctx.redis)
    before_steps = _sample(trainer.metrics(), "cotd_trainer_steps_total")
    before_tasks = _sample(trainer.metrics(), 'cotd_worker_tasks_started_total{stage="train"}')

    res = cluster.submit(main_grid["path"])
    assert res.status == "done" and res.cached_cells == 8
    assert res.enqueued == {"generate": 0, "train": 0, "evaluate": 0}
    gs = cluster.state(res.grid_id)
    assert gs.counts()["cached"] == 8
    assert all(v.get("computed", 0) == 0 for v in gs.stage_counts().values())
    assert executions(cluster.ctx.redis) == before_exec  # no teacher run, no training, no scoring
    assert all(cluster.ctx.redis.llen(q) == 0 for q in ("generate", "train", "evaluate"))
    assert _sample(trainer.metrics(), "cotd_trainer_steps_total") == before_steps
    assert _sample(trainer.metrics(), 'cotd_worker_tasks_started_total{stage="train"}') == before_tasks
    again = cluster.ctx.store.get_json(f"grids/{res.grid_id}/results.json")
    first = cluster.ctx.store.get_json(f"grids/{main_grid['submit'].grid_id}/results.json")
    assert again["cells"] == first["cells"]
    out = cluster.cli("grid", "status", res.grid_id)
    assert out.returncode == 0 and "cached" in out.stdout


def _sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " ") or (("{" not in series) and line.startswith(series + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _raw_publish(cluster, body: bytes, task: str = "cotd.train", queue: str = "train") -> str:
    """Put a message with this exact body (content type JSON) on a queue, as Celery's protocol 2."""
    from kombu import Connection

    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
               "retries": 0, "eta": None, "expires": None, "argsrepr": "", "kwargsrepr": "", "origin": "test"}
    with Connection(cluster.redis_url) as conn:
        conn.Producer().publish(
            body, routing_key=queue, exchange="", content_type="application/json", content_encoding="utf-8",
            headers=headers, serializer=None, declare=[],
        )
    return task_id


def test_bad_messages_are_rejected(cluster, main_grid):
    from shared.messages import TrainMessage

    app = cluster.ctx.app
    gid = main_grid["submit"].grid_id
    good = json.loads(cluster.state(gid).get("specs", next(a for a in cluster.state(gid).hash("specs") if a.startswith("train:"))))
    TrainMessage.model_validate(good)
    malformed = _raw_publish(cluster, b'[[{"grid_id": "x", "checkpoint": ')
    unknown = app.send_task("cotd.train", args=[{**good, "data": [1, 2, 3]}], queue="train").id
    missing = app.send_task("cotd.train", args=[{"grid_id": gid}], queue="train").id
    not_object = app.send_task("cotd.train", args=["hello"], queue="train").id

    # then a good grid: its train message comes after the bad ones on the same queue
    res = cluster.submit(cluster.write_grid(tiny_grid("dist-after-bad", None, [2], 1, 3)))
    assert cluster.wait(res.grid_id) == "done", cluster.state(res.grid_id).hash("reasons")
    log = cluster.workers["trainer"].log()
    assert "unknown field" in _line(log, unknown) and "data" in _line(log, unknown)
    assert "missing field" in _line(log, missing) and "checkpoint" in _line(log, missing)
    assert "Invalid JSON" in _line(log, not_object)
    assert any(malformed in ln and "Can't decode message body" in ln for ln in log.splitlines())  # Celery acks it
    wait_for(lambda: cluster.ctx.redis.llen("train") == 0, 10, "the train queue to drain")
    assert cluster.workers["trainer"].proc.poll() is None  # the worker went on


def _line(log: str, task_id: str) -> str:
    return "\n".join(line for line in log.splitlines() if task_id in line and "rejected" in line)


def test_sigkill_trainer_midtask(cluster):
    from services.trainer.loop import resume_step
    from shared.orchestration.submit import KIND_OF  # noqa: F401 - same kinds as the store

    res = cluster.submit(cluster.write_grid(tiny_grid("dist-kill", None, [3], 1, 5, max_steps=60)))
    gs = cluster.state(res.grid_id)
    train_key = next(a.split(":", 1)[1] for a in gs.hash("art") if a.startswith("train:"))
    state_dir = cluster.root / "worker-cache" / BUCKET / ".work" / "checkpoints" / train_key / "state"
    trainer = cluster.workers["trainer"]
    wait_for(lambda: resume_step(state_dir) >= 5, 120, "the trainer to save resumable state", interval=0.05)
    trainer.kill()
    assert gs.get("art", f"train:{train_key}") == "running"
    assert cluster.ctx.store.manifest("checkpoints", train_key) is None  # nothing half-published
    trainer.start()
    assert cluster.wait(res.grid_id) == "done", gs.hash("reasons")

    m = cluster.ctx.store.manifest("checkpoints", train_key)
    assert m["train"]["resumed_from"] >= 5  # the redelivered task resumed from the scratch state
    names = cluster.ctx.store.object_names(f"checkpoints/{train_key}/")
    assert names == cluster.ctx.store.artifact_objects("checkpoints", train_key, m)
    for kind in ("cotsets", "checkpoints", "evals"):
        keys = cluster.ctx.store.keys(kind)
        assert len(keys) == len(set(keys))
        for key in keys:  # every published artifact is complete: its objects are exactly its manifest's files
            man = cluster.ctx.store.manifest(kind, key)
            objs = cluster.ctx.store.object_names(f"{kind}/{key}/")
            assert objs == cluster.ctx.store.artifact_objects(kind, key, man)
    assert gs.stage_counts()["train"].get("computed") == 1


def test_failed_cell_does_not_stop_the_others(cluster, main_grid):
    """A teacher whose files are missing fails its cells, with the reason; the other cells finish."""
    doc = tiny_grid("dist-partial", str(cluster.root / "missing_level{level}.json"), [2], 1, 3)
    res = cluster.submit(cluster.write_grid(doc))
    assert cluster.wait(res.grid_id) == "failed"
    st = json.loads(cluster.cli("grid", "status", res.grid_id, "--json").stdout)
    by_teacher = {c["label"].split("/")[1]: c for c in st["cells"]}
    assert by_teacher["rec"]["state"] == "failed" and "missing_level2.json" in by_teacher["rec"]["reason"]
    assert by_teacher["proc"]["state"] in ("done", "cached")
    assert st["stages"]["train"].get("failed") == 1  # the failed CoT set's checkpoint is never trained
    waited = cluster.cli("grid", "wait", res.grid_id, "--timeout", "5")
    assert waited.returncode == 1 and "missing_level2.json" in waited.stderr


def test_transient_errors_are_retried_with_backoff():
    import urllib3
    from minio.error import S3Error

    from shared.orchestration.tasks import BACKOFF_MAX_S, backoff_s, is_transient

    assert is_transient(ConnectionRefusedError("teacher down"))
    assert is_transient(urllib3.exceptions.MaxRetryError(None, "/x", "refused"))
    assert is_transient(S3Error(None, "SlowDown", "m", "r", "i", "h"))
    wrapped = RuntimeError("stage failed")
    wrapped.__cause__ = TimeoutError("read timed out")
    assert is_transient(wrapped)
    assert not is_transient(ValueError("bad grid")) and not is_transient(FileNotFoundError("x"))
    assert not is_transient(S3Error(None, "AccessDenied", "m", "r", "i", "h"))
    assert all(0 <= backoff_s(n) <= BACKOFF_MAX_S for n in range(10))
