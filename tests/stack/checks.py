"""The compose stack test's checks, against images that tests/stack/run.sh has built.

run.sh starts dockerd, builds the images and calls this with the compose command line and its env
file; every check raises (exit 1) with what it saw. The steps, in order:

images      every cotd image runs as non-root, holds no source tree, pip, compiler or secret, and the
            CPU image has no CUDA libraries; their sizes are printed
up          `docker compose --profile cpu up --wait`: every service healthy, minio-init exited 0
reach       every port a service serves answers from another container, by service name; a teacher
            or worker listening on loopback only fails the healthcheck compose gives it
grid        `cotd grid submit` on the host, two teachers (procedural and teacher-cpu over HTTP) x two
            students; results.json equals an embedded `cotd run` of the same grid
prometheus  every worker target up
scale       `--scale generator-cpu=3`: 3 generator targets, and a new grid completes
kill        `docker kill` of the trainer mid-task, then `docker compose up -d`: the grid completes
            with every artifact built once and complete
stop        `docker compose stop` with a training task running: no container needs SIGKILL
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from shared.orchestration.context import Context
from shared.orchestration.state import GridState
from shared.settings import Settings
from tests.integration.test_distributed import METRICS, tiny_grid

REPO = Path(__file__).resolve().parents[2]
COMPOSE = shlex.split(os.environ["STACK_COMPOSE"])  # docker compose -p ... -f ... --env-file ...
ENV = dict(
    ln.split("=", 1) for ln in Path(os.environ["STACK_ENV_FILE"]).read_text().splitlines() if "=" in ln
)
WORK = Path(os.environ["STACK_WORK"])
CPU_IMAGE = "cotd/cpu:local"
SAME = ("cot_key", "checkpoint_key", "eval_key", "teacher", "level", "student", "seed", "cot_stats", *METRICS)
WORKERS = ("generator", "trainer", "evaluator")
GRID_TIMEOUT_S = 900


# ------------------------------------------------------------------------------------------ helpers
def sh(*cmd: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or an error naming the command and its output."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"`{shlex.join(cmd)}` exited {p.returncode}:\n{(p.stdout + p.stderr)[-3000:]}")
    return p.stdout


def compose(*args: str, **kw) -> str:
    return sh(*COMPOSE, *args, **kw)


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # not ready yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last error: {last})")


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def containers(service: str) -> list[str]:
    return compose("ps", "-a", "-q", service).split()


def inspect(cid: str) -> dict:
    return json.loads(sh("docker", "inspect", cid))[0]


def in_container(service: str, code: str) -> str:
    """Run Python in the first container of `service` (the cotd image) and return its stdout."""
    return compose("exec", "-T", service, "python", "-c", code, timeout=120)


def step(name: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        def run(*a, **kw):
            t0 = time.monotonic()
            print(f"== stack: {name}", flush=True)
            out = fn(*a, **kw)
            print(f"   ok: {name} ({time.monotonic() - t0:.0f} s)", flush=True)
            return out

        return run

    return wrap


# --------------------------------------------------------------------------------------- the host side
def host_env() -> dict[str, str]:
    """The environment of `cotd` on the host: the stack's Redis and S3 through their published ports."""
    return os.environ | {
        "COTD_REDIS_URL": f"redis://127.0.0.1:{ENV['COTD_REDIS_PORT']}/0",
        "COTD_REDIS_PASSWORD": ENV["REDIS_PASSWORD"],
        "COTD_STORE": "s3",
        "COTD_S3_ENDPOINT": f"127.0.0.1:{ENV['COTD_MINIO_PORT']}",
        "COTD_S3_ACCESS_KEY": ENV["COTD_S3_ACCESS_KEY"],
        "COTD_S3_SECRET_KEY": ENV["COTD_S3_SECRET_KEY"],
        "COTD_S3_BUCKET": ENV["COTD_S3_BUCKET"],
        "COTD_S3_SECURE": "false",
        "COTD_CACHE_DIR": str(WORK / "client-cache"),
    }


def host_context() -> Context:
    env = host_env()
    return Context(
        Settings(
            redis_url=env["COTD_REDIS_URL"],
            redis_password=env["COTD_REDIS_PASSWORD"],
            store="s3",
            s3_endpoint=env["COTD_S3_ENDPOINT"],
            s3_access_key=env["COTD_S3_ACCESS_KEY"],
            s3_secret_key=env["COTD_S3_SECRET_KEY"],
            s3_bucket=env["COTD_S3_BUCKET"],
            cache_dir=env["COTD_CACHE_DIR"],
        )
    )


def cotd(*args: str, env: dict[str, str] | None = None, timeout: float = 300, check: bool = True) -> str:
    """The `cotd` CLI of this checkout, run on the host."""
    cmd = (sys.executable, "-c", "from shared.cli import main; main()", *args)
    return sh(*cmd, env=env or host_env(), timeout=timeout, check=check)


def grid_doc(name: str, level: int, seed: int, max_steps: int) -> dict:
    """The distributed tests' tiny grid, with two teachers: code, and teacher-cpu over HTTP."""
    doc = tiny_grid(name, None, [level], 2, seed, max_steps=max_steps)
    # no base_url: the generator takes COTD_TEACHER_URL (http://teacher-cpu:80 in the cpu profile);
    # one request at a time, so the server never batches (its output is then batch-independent)
    served = {
        "name": "served",
        "kind": "tgi",
        "model": "smollm2-135m-instruct",
        "concurrency": 1,
        "max_new_tokens": 16,
    }
    doc["teachers"].append(served)
    doc["datasets"][0].update(train_size=24, test_size=16)
    doc["evaluation"].update(test_size=16, max_new_tokens=24, batch_size=16)
    return doc


def submit(doc: dict) -> tuple[str, Path]:
    path = WORK / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = json.loads(cotd("grid", "submit", str(path), "--json"))
    assert res["cells"] == 4 and res["cached_cells"] == 0, res
    return res["grid_id"], path


def wait_grid(grid_id: str) -> None:
    """`cotd grid wait`: exit 0 when every cell is done; else fail with the grid's status and the logs."""
    try:
        cotd("grid", "wait", grid_id, "--timeout", str(GRID_TIMEOUT_S), timeout=GRID_TIMEOUT_S + 60)
    except AssertionError as e:
        status = cotd("grid", "status", grid_id, check=False)
        logs = compose(
            "logs", "--no-color", "--tail", "40", *(f"{w}-cpu" for w in WORKERS), "teacher-cpu", check=False
        )
        raise AssertionError(f"grid {grid_id} did not complete: {e}\n{status}\n{logs}") from None


def artifacts_complete(ctx: Context) -> dict[str, int]:
    """Every published artifact's objects are exactly its manifest's files, and no key appears twice."""
    counts = {}
    for kind in ("cotsets", "checkpoints", "evals"):
        keys = ctx.store.keys(kind)
        assert len(keys) == len(set(keys)), f"{kind}: a key twice: {keys}"
        for key in keys:
            man = ctx.store.manifest(kind, key)
            objs = ctx.store.object_names(f"{kind}/{key}/")
            want = ctx.store.artifact_objects(kind, key, man)
            assert objs == want, f"{kind}/{key}: objects {objs} != manifest {want}"
        counts[kind] = len(keys)
    return counts


def running_train(gs: GridState) -> str | None:
    return next(
        (
            a.split(":", 1)[1]
            for a, st in gs.hash("art").items()
            if a.startswith("train:") and st == "running"
        ),
        None,
    )


def targets(job: str) -> list[dict]:
    doc = http_json(f"http://127.0.0.1:{ENV['COTD_PROMETHEUS_PORT']}/api/v1/targets?state=active")
    return [t for t in doc["data"]["activeTargets"] if t["labels"]["job"] == job]


def all_up(job: str, n: int) -> bool:
    ts = targets(job)
    return len(ts) == n and all(t["health"] == "up" for t in ts)


# ----------------------------------------------------------------------------------------------- steps
@step("images: non-root, no source tree, pip, compiler or secret; no CUDA in the CPU image")
def check_images(images: list[str]) -> None:
    secrets = [
        v for k, v in ENV.items() if any(w in k for w in ("KEY", "SECRET", "PASSWORD")) and len(v) >= 8
    ]
    probe = (
        "import glob, importlib.util as u, os, shutil, sys, torch\n"
        "bad = [p for p in ('/opt/cotd', '/src', '/.git', '/opt/venv/.git') if os.path.exists(p)]\n"
        "bad += [m for m in ('tests.integration', 'tests.stack', 'bench') if u.find_spec(m.split('.')[0]) and u.find_spec(m)]\n"
        "bad += sorted(set(os.listdir('/home/cotd')) - {'.cache', *os.listdir('/etc/skel')})\n"
        "bad += glob.glob('/opt/**/.env', recursive=True) + glob.glob('/home/**/.env', recursive=True)\n"
        "bad += [t for t in ('pip', 'pip3', 'gcc', 'cc', 'g++', 'make') if shutil.which(t)]\n"
        "bad += ['pip module'] if u.find_spec('pip') else []\n"
        "bad += glob.glob('/opt/venv/lib/python3*/site-packages/nvidia*') if torch.version.cuda is None else []\n"
        "print(os.getuid(), torch.__version__, torch.version.cuda, bad)\n"
        "sys.exit(1 if bad or os.getuid() == 0 else 0)\n"
    )
    for image in images:
        meta = json.loads(sh("docker", "image", "inspect", image))[0]
        user = meta["Config"]["User"]
        assert user and user.split(":")[0] not in ("root", "0"), f"{image} runs as {user!r}"
        dump = json.dumps(meta) + sh("docker", "history", "--no-trunc", image)
        leaked = [s for s in secrets if s in dump]
        assert not leaked, f"{image}: a secret of the env file is in the image config or history"
        out = sh("docker", "run", "--rm", image, "python", "-c", probe, check=False)
        assert out.strip() and out.split()[0] != "0" and out.strip().endswith("[]"), f"{image}: {out}"
        print(f"   {image}: uid {out.split()[0]}, torch {out.split()[1]} (cuda {out.split()[2]})")


@step("compose --profile cpu up --wait: every service healthy")
def check_up() -> None:
    compose("up", "-d", "--wait", "--wait-timeout", "600", timeout=720)
    rows = [json.loads(ln) for ln in compose("ps", "-a", "--format", "json").splitlines() if ln.strip()]
    states = {r["Service"]: (r["State"], r.get("Health", ""), r.get("ExitCode")) for r in rows}
    for svc, (state, health, code) in states.items():
        if svc == "minio-init":
            assert state == "exited" and code == 0, f"minio-init: {state} {code}"
        else:
            assert state == "running" and health in ("healthy", ""), f"{svc}: {state} {health}"
    unchecked = [s for s, (st, h, _) in states.items() if st == "running" and not h]
    assert not unchecked, f"services without a healthcheck: {unchecked}"
    print("   " + ", ".join(f"{s} {h or st}" for s, (st, h, _) in sorted(states.items())))


REACH = """
import socket, urllib.request
def http(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status
s = socket.create_connection(("redis", 6379), timeout=5); s.sendall(b"PING\\r\\n"); pong = s.recv(64); s.close()
assert pong.startswith((b"+PONG", b"-NOAUTH")), pong
for url in ("http://minio:9000/", "http://prometheus:9090/-/healthy", "http://grafana:3000/api/health",
            "http://teacher-cpu:80/health", "http://generator:9100/metrics", "http://trainer:9100/metrics",
            "http://evaluator:9100/metrics"):
    assert http(url) == 200, url
print("reachable")
"""


@step("reach: every served port answers from another container; loopback-only servers fail the healthcheck")
def check_reach(network: str, model_dir: Path) -> None:
    assert "reachable" in in_container("trainer-cpu", REACH)
    teacher = inspect(containers("teacher-cpu")[0])
    test = teacher["Config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD", test
    sh("docker", "exec", teacher["Id"], *test[1:])  # passes where the server is reachable
    # The same server and healthcheck, bound to loopback (the old teacher-cpu command): unhealthy.
    name = f"{network}-loopback-teacher"
    sh("docker", "run", "-d", "--rm", "--name", name, "--network", network, "-v", f"{model_dir}:/models/teacher:ro",
       "--sysctl", "net.ipv4.ip_unprivileged_port_start=0", CPU_IMAGE,
       "cotd", "teacher", "serve", "--model", "/models/teacher", "--host", "127.0.0.1", "--port", "80")  # fmt: skip
    try:
        local = ["python", "-m", "shared.metrics", "--check", "http://127.0.0.1:80/health"]
        wait_for(
            lambda: subprocess.run(["docker", "exec", name, *local], capture_output=True).returncode == 0,
            180,
            "the loopback teacher",
        )
        rc = subprocess.run(["docker", "exec", name, *test[1:]], capture_output=True).returncode
        assert rc != 0, "the teacher-cpu healthcheck passes for a server that other containers cannot reach"
    finally:
        sh("docker", "rm", "-f", name, check=False)
    # The workers' healthcheck (the image's): passes for /metrics on all interfaces, fails on loopback.
    wtest = json.loads(sh("docker", "image", "inspect", CPU_IMAGE))[0]["Config"]["Healthcheck"]["Test"]
    serve = (
        "import pathlib, sys; pathlib.Path('/tmp/m').mkdir(); pathlib.Path('/tmp/m/metrics').write_text('ok')"
    )
    for bind, want in (("0.0.0.0", 0), ("127.0.0.1", 1)):
        cname = f"{network}-metrics-{want}"
        sh("docker", "run", "-d", "--rm", "--name", cname, "--network", network, CPU_IMAGE, "sh", "-c",
           f'python -c "{serve}" && exec python -m http.server 9100 --bind {bind} --directory /tmp/m')  # fmt: skip
        try:
            local = ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 9100), 2)"]
            wait_for(
                lambda c=cname, lc=local: (
                    subprocess.run(["docker", "exec", c, *lc], capture_output=True).returncode == 0
                ),
                60,
                "a /metrics server",
            )
            rc = subprocess.run(["docker", "exec", cname, *wtest[1:]], capture_output=True).returncode
            assert (rc == 0) == (want == 0), f"worker healthcheck exit {rc} for a server bound to {bind}"
        finally:
            sh("docker", "rm", "-f", cname, check=False)


def rows(doc: dict) -> dict[str, dict]:
    return {c["eval_key"]: c for c in doc["cells"]}


@step("grid: cotd grid submit from the host completes, and equals an embedded cotd run")
def check_grid(teacher_ip: str) -> str:
    grid_id, path = submit(grid_doc("stack-main", level=1, seed=11, max_steps=12))
    wait_grid(grid_id)
    cotd("report", grid_id, "--out", str(WORK / "report"))
    dist = json.loads((WORK / "report" / "results.json").read_text())
    # The same grid in one process on the host, asking the same teacher server (by its container address).
    env = os.environ | {
        "COTD_TEACHER_URL": f"http://{teacher_ip}:80",
        "COTD_CACHE_DIR": str(WORK / "emb-cache"),
    }
    for var in ("COTD_REDIS_URL", "COTD_STORE", "COTD_S3_ENDPOINT"):
        env.pop(var, None)
    cotd(
        "run",
        str(path),
        "--out",
        str(WORK / "embedded"),
        "--device",
        "cpu",
        "--jobs",
        "1",
        env=env,
        timeout=900,
    )
    emb = json.loads((WORK / "embedded" / "results.json").read_text())
    a, b = rows(dist), rows(emb)
    assert set(a) == set(b) and len(a) == 4, (sorted(a), sorted(b))
    for key, row in a.items():
        diff = {f: (row[f], b[key][f]) for f in SAME if row[f] != b[key][f]}
        assert not diff, f"cell {key}: distributed != embedded: {diff}"
    served = [r for r in a.values() if r["teacher"] == "served"]
    assert served and all(r["cot_stats"]["kept"] > 0 for r in served), served
    print("   " + "; ".join(f"{r['teacher']}/{r['student']}: acc {r['accuracy']:.3f}" for r in a.values()))
    return grid_id


@step("prometheus: every worker target up")
def check_prometheus(n_generators: int = 1) -> None:
    for job in WORKERS:
        n = n_generators if job == "generator" else 1
        wait_for(lambda j=job, k=n: all_up(j, k), 120, f"{n} {job} target(s) up in Prometheus", interval=3)
    print("   " + ", ".join(f"{j}: {len(targets(j))} up" for j in WORKERS))


@step("scale generator-cpu=3 and kill the trainer mid-task: the grid completes, every artifact built once")
def check_scale_and_kill() -> None:
    compose("up", "-d", "--wait", "--wait-timeout", "600", "--scale", "generator-cpu=3", timeout=720)
    assert len(containers("generator-cpu")) == 3
    check_prometheus(3)
    ctx = host_context()
    # long enough that the kill lands mid-task (60 steps of padding-free training took under 3 s)
    grid_id, _ = submit(grid_doc("stack-kill", level=2, seed=12, max_steps=300))
    gs = GridState(ctx.redis, grid_id)
    wait_for(lambda: running_train(gs) is not None, 600, "a training task to start", interval=0.5)
    key = running_train(gs)
    time.sleep(3)  # let it train a few steps (it saves resumable state every 5)
    (trainer,) = containers("trainer-cpu")
    sh("docker", "kill", trainer)
    state = gs.get("art", f"train:{key}")
    assert state == "running" and ctx.store.manifest("checkpoints", key) is None, (
        f"the training task was {state}, not running, when its worker was killed"
    )
    compose("up", "-d", "--wait", "--wait-timeout", "600", "--scale", "generator-cpu=3", timeout=720)
    wait_grid(grid_id)
    counts = artifacts_complete(ctx)
    stages = gs.stage_counts()
    for stage, st in stages.items():
        assert st.get("computed", 0) <= st["total"], (stage, st)
    assert stages["train"]["computed"] == stages["train"]["total"] == 4, stages
    resumed = ctx.store.manifest("checkpoints", key)["train"].get("resumed_from")
    print(f"   artifacts {counts}; killed checkpoint resumed from step {resumed}")


@step("stop with a task running: every container exits on SIGTERM within its grace period")
def check_stop() -> None:
    ctx = host_context()
    grid_id, _ = submit(grid_doc("stack-stop", level=1, seed=13, max_steps=30))
    gs = GridState(ctx.redis, grid_id)
    wait_for(lambda: running_train(gs) is not None, 600, "a training task to start", interval=0.5)
    ids = compose("ps", "-q").split()
    t0 = time.monotonic()
    compose("stop", timeout=300)
    took = time.monotonic() - t0
    killed = {}
    for cid in ids:
        meta = inspect(cid)
        if meta["State"]["ExitCode"] == 137 or meta["State"]["OOMKilled"]:
            killed[meta["Name"]] = meta["State"]["ExitCode"]
    assert not killed, f"killed after the grace period instead of stopping on SIGTERM: {killed}"
    print(f"   {len(ids)} containers stopped in {took:.0f} s, none killed")


def main() -> int:
    network = f"{os.environ['STACK_PROJECT']}_default"
    model_dir = Path(ENV["COTD_TEACHER_CPU_MODEL_DIR"])
    check_images(os.environ["STACK_IMAGES"].split())
    check_up()
    check_reach(network, model_dir)
    teacher_ip = inspect(containers("teacher-cpu")[0])["NetworkSettings"]["Networks"][network]["IPAddress"]
    check_grid(teacher_ip)
    check_prometheus()
    check_scale_and_kill()
    check_stop()
    print("== stack: all checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(f"stack: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
