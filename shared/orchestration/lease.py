"""A lease on an artifact being built: at most one worker builds a given key at a time.

The lease is a Redis key set with NX and a short TTL, renewed by a background thread while the
task runs. A worker that dies stops renewing, so its lease lapses within `ttl` seconds and a
redelivered task can take over (and resume from its scratch state).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType

import redis

log = logging.getLogger("cotd.lease")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_name(kind: str, key: str) -> str:
    """The Redis key of the lease on one artifact."""
    return f"cotd:lease:{kind}:{key}"


class Lease:
    """Hold `cotd:lease:<kind>:<key>` while building an artifact (a context manager)."""

    def __init__(self, r: redis.Redis, kind: str, key: str, ttl_s: int) -> None:
        self.r = r
        self.name = lease_name(kind, key)
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """Take the lease if it is free."""
        return bool(self.r.set(self.name, self.token, nx=True, px=self.ttl_ms))

    def acquire(self, done: Callable[[], bool], poll_s: float = 1.0) -> bool:
        """Wait for the lease; return False (without it) as soon as `done()` says the artifact exists."""
        waited = 0.0
        while not self.try_acquire():
            if done():
                return False
            if waited == 0:
                log.info("waiting for %s (held by %s)", self.name, self.r.get(self.name))
            time.sleep(poll_s)
            waited += poll_s
        self._thread = threading.Thread(target=self._renew, name="lease-renew", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        period = self.ttl_ms / 3000
        while not self._stop.wait(period):
            try:
                if not self.r.eval(_RENEW, 1, self.name, self.token, self.ttl_ms):
                    log.warning("lost lease %s", self.name)
                    return
            except redis.RedisError as e:  # keep trying: the TTL covers short outages
                log.warning("cannot renew %s: %s", self.name, e)

    def release(self) -> None:
        """Give the lease back (only if still ours)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self.r.eval(_RELEASE, 1, self.name, self.token)
        except redis.RedisError as e:
            log.warning("cannot release %s: %s (it lapses by itself)", self.name, e)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
