"""`cotd teacher serve` as a subprocess over a tiny model, on a free loopback port (for the teacher tests).

The tiny model itself is the session fixture `tiny_teacher` (tests/integration/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.services import COTD, free_port, stop, wait_for


@contextmanager
def teacher_server(model: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the server (one torch thread), wait for /health, yield (url, process); stop it after."""
    port = free_port()
    cmd = [*COTD, "teacher", "serve", "--model", str(model), "--port", str(port), "--threads", "1", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"teacher serve exited: {proc.stderr.read().decode()[-2000:]}")
        with urllib.request.urlopen(url + "/health", timeout=1) as r:  # noqa: S310 - loopback
            return r.status == 200

    try:
        wait_for(
            healthy, 240, "teacher serve to become healthy", interval=0.3
        )  # generous: a loaded CI machine
        yield url, proc
    finally:
        stop(proc)
