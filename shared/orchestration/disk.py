"""A full disk: how to recognise it, and a worker that stops taking tasks while its disk is full.

A task that runs out of disk (torch's "unexpected pos", tokenizers' "os error 28", plain ENOSPC)
removes its scratch folder, evicts the worker's download cache, and is retried through the broker
like any outage. So that the retry lands on another node, the worker first stops consuming its
queue (`cancel_consumer`, the same control message `celery control` sends) for
`COTD_DISK_FULL_PAUSE_S`; its supervisor resumes it once the pause is over and the cache disk has
`COTD_MIN_FREE_MB` free. A worker whose disk fills up for any other reason pauses the same way.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger("cotd.disk")

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_MARKERS = ("no space left on device", "os error 28", "disk quota exceeded", "unexpected pos", "file write failed")
"""Texts of disk-full errors from libraries that do not raise OSError (torch.save, tokenizers)."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception in its chain, is a full disk (pure)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if any(m in str(e).lower() for m in DISK_FULL_MARKERS):
            return True
        e = e.__cause__ or e.__context__
    return False


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system holding `path`."""
    return shutil.disk_usage(path).free


class DiskGuard:
    """Stops and resumes one worker's consumer of its queue by the free space of its cache disk."""

    def __init__(self, app, queue: str, hostname: str, path: str | Path, min_free_bytes: int, pause_s: float) -> None:
        self.app, self.queue, self.hostname = app, queue, hostname
        self.path = Path(path)
        self.min_free_bytes = min_free_bytes
        self.pause_s = pause_s
        self.paused_until: float | None = None
        self._lock = threading.Lock()

    def full(self) -> None:
        """A task ran out of disk: stop taking tasks for at least `pause_s`."""
        with self._lock:
            self.paused_until = time.monotonic() + self.pause_s
            self._send("cancel_consumer")
        log.warning("disk full: %s stops taking tasks from %s for at least %.0f s", self.hostname, self.queue, self.pause_s)

    def check(self) -> None:
        """Pause when the disk is below its minimum free space; resume once the pause is over and room is back."""
        room = free_bytes(self.path) >= self.min_free_bytes
        with self._lock:
            if self.paused_until is None:
                if not room:
                    self.paused_until = time.monotonic()
                    self._send("cancel_consumer")
                    log.warning("disk nearly full: %s stops taking tasks from %s", self.hostname, self.queue)
            elif room and time.monotonic() >= self.paused_until:
                self.paused_until = None
                self._send("add_consumer")
                log.warning("disk has room again: %s takes tasks from %s again", self.hostname, self.queue)

    def _send(self, command: str) -> None:
        getattr(self.app.control, command)(self.queue, destination=[self.hostname], reply=False)


GUARD: DiskGuard | None = None
"""This worker process's guard (set by `cotd worker`; None in embedded mode and in tests' own processes)."""
