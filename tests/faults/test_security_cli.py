"""Issue #18.9: operations. Real `cotd` subprocesses against a closed port, a password-protected
redis-server, a moto S3 server and no-op workers.

- with Redis or S3 down every command prints one line (no traceback, no password) and exits non-zero;
- Redis with a password: workers and the CLI connect with COTD_REDIS_PASSWORD; a wrong one is one line;
  a `change-me` placeholder is refused naming the variable; the URL's password is never printed;
- `cotd run` exits 1 when a cell failed, as `cotd grid wait` does.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.integration.services import (
    COTD,
    REPO,
    Worker,
    cotd_env,
    free_port,
    moto_server,
    redis_db,
    scratch_dir,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 6
BUCKET = "cotd-sec-ops"
PASSWORD = "pw-Never-Printed-7f3a"
GRID = {
    "name": "ops",
    "datasets": [{"name": "arith", "train_size": 4, "test_size": 2}],
    "teachers": [{"name": "proc", "kind": "procedural"}],
    "levels": [1],
    "students": [{"name": "xs", "model": "tiny:xs"}],
}
GRID_ID = "ops-20260101-000000-abcdef"


def run_all(commands: list[list[str]], env: dict[str, str], cwd) -> list[subprocess.CompletedProcess]:
    """Run `cotd` commands at once (each its own process) and collect them."""
    procs = [
        subprocess.Popen(
            [*COTD, *c], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in commands
    ]
    out = []
    for c, p in zip(commands, procs, strict=True):
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


def assert_one_line(res: subprocess.CompletedProcess, code: int, starts: str) -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == code, (res.args, res.returncode, res.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(starts), (res.args, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and PASSWORD not in res.stderr + res.stdout


@pytest.fixture(scope="module")
def moto():
    with scratch_dir("cotd-sec-ops-") as root, moto_server(root) as endpoint:
        (root / "ops.yaml").write_text(yaml.safe_dump(GRID))
        yield root, endpoint


COMMANDS = [
    ["grid", "submit", "ops.yaml"],
    ["grid", "status", GRID_ID],
    ["grid", "wait", GRID_ID, "--timeout", "5"],
    ["grid", "cancel", GRID_ID],
    ["grid", "list"],
]


def test_redis_down_every_command_prints_one_line_and_exits_3(moto):
    root, endpoint = moto
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    env = cotd_env(url, endpoint, BUCKET, root / "cache")
    for res in run_all(COMMANDS, env, root):
        assert_one_line(res, 3, "Error: cannot reach Redis (COTD_REDIS_URL): ")
        assert "Connection refused" in res.stderr
    (report,) = run_all([["report", GRID_ID, "--out", str(root / "r")]], env, root)
    assert_one_line(report, 1, "Error: ")  # not a grid Redis knows of, and not a folder


def test_s3_down_submit_prints_one_line_and_exits_3(moto):
    root, _ = moto
    env = cotd_env(redis_db(REDIS_DB), f"127.0.0.1:{free_port()}", BUCKET, root / "cache")
    (res,) = run_all([COMMANDS[0]], env, root)
    assert_one_line(res, 3, "Error: cannot reach a server: ")
    assert "Connection refused" in res.stderr


@pytest.fixture(scope="module")
def secured_redis(moto):
    """A redis-server of our own that requires PASSWORD, on a free loopback port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    root, _ = moto
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--requirepass", PASSWORD],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=root,
    )  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD)
    try:
        wait_for(client.ping, 20, "the password-protected redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


def test_cli_and_workers_connect_with_the_redis_password(moto, secured_redis):
    root, endpoint = moto
    env = cotd_env(secured_redis, endpoint, BUCKET, root / "pw-cache", COTD_REDIS_PASSWORD=PASSWORD)
    noop = {**env, "COTD_STAGE_MODE": "noop"}
    workers = [Worker(role, noop, root, name=f"pw-{role}") for role in ("generator", "trainer", "evaluator")]
    try:
        for w in workers:
            w.start()
        submit = subprocess.run(
            [*COTD, "grid", "submit", "ops.yaml"],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submit.returncode == 0, submit.stderr[-2000:]
        grid_id = submit.stdout.strip()
        wait = subprocess.run(
            [*COTD, "grid", "wait", grid_id, "--timeout", "90", "--interval", "0.5"],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert wait.returncode == 0, wait.stderr[-2000:] + "\n".join(w.log()[-1500:] for w in workers)
        for w in workers:
            log = w.log()
            assert PASSWORD not in log
            assert "metrics served on 127.0.0.1:" in log  # loopback unless COTD_METRICS_HOST says otherwise
    finally:
        for w in workers:
            w.stop()


def test_wrong_password_placeholder_and_no_grid_are_one_line_without_the_password(moto, secured_redis):
    root, endpoint = moto
    base = cotd_env(secured_redis, endpoint, BUCKET, root / "pw-cache")
    wrong = {**base, "COTD_REDIS_PASSWORD": "not-" + PASSWORD}
    placeholder = {**base, "COTD_REDIS_PASSWORD": "change-me-to-a-long-random-redis-password"}
    in_url = {**base, "COTD_REDIS_URL": secured_redis.replace("redis://", f"redis://:{PASSWORD}@")}
    (bad,) = run_all([["grid", "list"]], wrong, root)
    assert_one_line(bad, 3, "Error: cannot reach Redis (COTD_REDIS_URL): ")
    assert "not-" + PASSWORD not in bad.stderr
    (ph,) = run_all([["grid", "list"]], placeholder, root)
    assert_one_line(ph, 1, "Error: COTD_REDIS_PASSWORD: still the change-me... placeholder from .env.example")
    (none,) = run_all([["grid", "status", "no-such-grid"]], in_url, root)
    assert_one_line(none, 1, "Error: no grid 'no-such-grid' in redis://:***@127.0.0.1:")


def test_cotd_run_exits_1_when_a_cell_failed(moto):
    root, _ = moto
    doc = {
        **GRID,
        "name": "ops-run",
        "teachers": [{"name": "rec", "kind": "recorded", "files": "missing_level{level}.json"}],
    }
    (root / "ops-run.yaml").write_text(yaml.safe_dump(doc))
    res = subprocess.run(
        [*COTD, "run", "ops-run.yaml", "--out", str(root / "run"), "--jobs", "1"],
        cwd=root,
        env=cotd_env(
            "redis://127.0.0.1:1/0", "127.0.0.1:1", BUCKET, root / "run-cache", PYTHONPATH=str(REPO)
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert "1 failed" in res.stdout + res.stderr
    assert (root / "run" / "results.json").exists()  # the results are written all the same
