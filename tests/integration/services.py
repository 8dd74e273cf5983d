"""Helpers for integration tests: Redis, a moto S3 server and `cotd worker` processes.

Everything is started on loopback, on free ports; readiness is polled (no fixed sleeps); every
process a helper starts is stopped by it (by its own pid).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REDIS_HOST = "127.0.0.1"
REDIS_PORT = int(os.environ.get("COTD_TEST_REDIS_PORT", "6379"))
"""The test Redis; another port lets two checkouts run their tests at once."""
S3_KEY, S3_SECRET = "cotd-test-key", "cotd-test-secret"
COTD = [sys.executable, "-c", "from shared.cli import main; main()"]
"""The `cotd` command, run by this interpreter."""


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not ready yet
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A private temporary folder (not pytest's shared basetemp); kept when COTD_KEEP_TEST_DIR is set."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if os.environ.get("COTD_KEEP_TEST_DIR"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def redis_db(db: int) -> str:
    """`redis://127.0.0.1:6379/<db>` with that db flushed, or skip when Redis does not answer."""
    import redis

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    try:
        r = redis.Redis.from_url(url, socket_connect_timeout=1)
        r.ping()
    except Exception as e:
        pytest.skip(f"Redis is not answering at {REDIS_HOST}:{REDIS_PORT} ({type(e).__name__}: {e})")
    r.flushdb()
    return url


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback test server
            return resp.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500


@contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """A moto S3 server on a free loopback port; yields its `host:port`."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    port = free_port()
    log = open(log_dir / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: proc.poll() is None and _http_ok(f"http://127.0.0.1:{port}/"), 30, "the moto S3 server"
        )
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cotd_env(redis_url: str, s3_endpoint: str, bucket: str, cache_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a worker (or CLI) in distributed mode; torch on one thread."""
    env = dict(os.environ)
    env.update(
        {
            "COTD_REDIS_URL": redis_url,
            "COTD_STORE": "s3",
            "COTD_S3_ENDPOINT": s3_endpoint,
            "COTD_S3_ACCESS_KEY": S3_KEY,
            "COTD_S3_SECRET_KEY": S3_SECRET,
            "COTD_S3_BUCKET": bucket,
            "COTD_S3_SECURE": "false",
            "COTD_CACHE_DIR": str(cache_dir),
            "COTD_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def client_settings(redis_url: str, s3_endpoint: str, bucket: str, cache_dir: Path):
    """The settings of a client (submit, status, report) of the same Redis and bucket as `cotd_env`."""
    from shared.settings import Settings

    return Settings(
        redis_url=redis_url,
        store="s3",
        s3_endpoint=s3_endpoint,
        s3_access_key=S3_KEY,
        s3_secret_key=S3_SECRET,
        s3_bucket=bucket,
        cache_dir=str(cache_dir),
    )


class Worker:
    """A `cotd worker ROLE` subprocess with its log file and /metrics port."""

    def __init__(
        self, role: str, env: dict[str, str], log_dir: Path, concurrency: int = 1, name: str | None = None
    ) -> None:
        self.role = role
        self.env = env
        self.concurrency = concurrency
        self.name = name or role
        self.log_path = log_dir / f"worker-{self.name}.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> Worker:
        """Start it and wait until Celery reports it ready."""
        self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                *COTD,
                "worker",
                self.role,
                "--metrics-port",
                str(self.port),
                "--concurrency",
                str(self.concurrency),
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(
            lambda: self._alive() and " ready." in self.log(), timeout, f"worker {self.name} to be ready"
        )
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
            )
        return True

    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        """Its /metrics text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:  # noqa: S310
            return resp.read().decode()

    def kill(self) -> None:
        """SIGKILL (no cleanup, no acknowledgement)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Warm shutdown."""
        if self.proc is not None:
            stop(self.proc, timeout=20)


@contextmanager
def teacher_server(model: Path, log_dir: Path, threads: int = 1, timeout: float = 300) -> Iterator[str]:
    """`cotd teacher serve` over a local model on a free loopback port; yields its base URL."""
    port = free_port()
    log = open(log_dir / "teacher-serve.log", "wb")  # noqa: SIM115 - closed below
    cmd = [*COTD, "teacher", "serve", "--model", str(model), "--port", str(port), "--threads", str(threads)]
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": str(threads)}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and _http_ok(url + "/health"), timeout, "cotd teacher serve")
        yield url
    finally:
        stop(proc)
        log.close()
