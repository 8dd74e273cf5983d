"""A small cluster for the queue fault tests: real Redis, a moto S3 server, `cotd worker` processes."""

from __future__ import annotations

import http.client
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.integration import services as svc


class QueueCluster:
    """Workers of any role on one Redis db and one bucket, and a submitting context."""

    def __init__(self, root: Path, redis_url: str, endpoint: str, bucket: str, **env: str) -> None:
        from shared.orchestration.context import Context

        self.root = root
        self.redis_url = redis_url
        self.env = svc.cotd_env(redis_url, endpoint, bucket, root / "worker-cache", **env)
        self.ctx = Context(svc.client_settings(redis_url, endpoint, bucket, root / "client-cache"))
        self.workers: list[svc.Worker] = []

    @property
    def redis(self):
        return self.ctx.redis

    def worker(self, role: str, name: str | None = None, concurrency: int = 1, **env: str) -> svc.Worker:
        """Start a worker (its env: the cluster's plus `env`) and wait until it is ready."""
        w = svc.Worker(
            role,
            {**self.env, **env},
            self.root,
            concurrency=concurrency,
            name=name or f"{role}-{len(self.workers)}",
        )
        self.workers.append(w)
        return w.start()

    def submit(self, doc: dict):
        from shared.grid import load_grid
        from shared.orchestration.submit import submit_grid

        path = self.root / f"{doc['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return submit_grid(load_grid(path), self.ctx)

    def state(self, grid_id: str):
        from shared.orchestration.state import GridState

        return GridState(self.redis, grid_id)

    def wait(self, grid_id: str, timeout: float = 120) -> str:
        """The grid's final status; fails with the workers' logs after `timeout`."""
        gs = self.state(grid_id)
        try:
            svc.wait_for(
                lambda: gs.status() in ("done", "failed", "cancelled"),
                timeout,
                f"grid {grid_id}",
                interval=0.3,
            )
        except AssertionError:
            logs = "\n".join(f"--- {w.name}\n{w.log()[-2500:]}" for w in self.workers)
            raise AssertionError(
                f"grid {grid_id} not finished: {gs.counts()} {gs.stage_counts()}\n{logs}"
            ) from None
        return gs.status()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*svc.COTD, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message>'
    b"<Resource>%s</Resource><RequestId>cotd-test</RequestId></Error>"
)


class S3Gate:
    """A loopback HTTP proxy in front of the S3 server that can refuse some writes, as S3 does (403 XML)."""

    def __init__(self, upstream: str) -> None:
        self.refused: list[str] = []
        """PUTs whose path contains one of these are answered AccessDenied."""
        host, port = upstream.split(":")
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "PUT" and any(p in self.path for p in gate.refused):
                    page = ACCESS_DENIED % self.path.encode()
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                head = self.command == "HEAD"  # its Content-Length is the object's
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def queue_cluster(db: int, bucket: str, gate: bool = False, **env: str) -> Iterator[QueueCluster]:
    """A cluster on Redis db `db` (flushed) and a fresh moto server (behind an `S3Gate` if `gate`)."""
    url = svc.redis_db(db)
    with svc.scratch_dir(f"cotd-{bucket}-") as root, svc.moto_server(root) as endpoint:
        g = S3Gate(endpoint) if gate else None
        c = QueueCluster(root, url, g.endpoint if g else endpoint, bucket, **env)
        c.gate = g
        try:
            yield c
        finally:
            c.stop()
            if g:
                g.close()


def noop_grid(name: str, seeds: int = 1, students: int = 1, first_seed: int = 1, train_size: int = 8) -> dict:
    """A grid for `COTD_STAGE_MODE=noop` workers: procedural teacher, tiny students.

    Other seeds make other checkpoints; another `train_size` makes another CoT set too.
    """
    return {
        "name": name,
        "datasets": [{"name": "arith", "train_size": train_size, "test_size": 4}],
        "teachers": [{"name": "proc", "kind": "procedural"}],
        "levels": [1],
        "students": [
            {"name": f"s{i}", "model": "tiny:xs", "training": {"lr": 0.001 * (i + 1)}}
            for i in range(students)
        ],
        "training": {"max_steps": 2, "micro_batch_size": 2, "global_batch_size": 2, "from_scratch": True},
        "evaluation": {"test_size": 4, "max_new_tokens": 8, "batch_size": 4},
        "seeds": list(range(first_seed, first_seed + seeds)),
    }
