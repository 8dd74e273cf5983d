"""Cancellation of a running task: the stage loops call a check at every step, batch or item.

The check reads the grid's status from Redis at most once per `COTD_CANCEL_CHECK_S`, so calling it
every training step costs nothing measurable. It raises `Cancelled` once the grid is cancelled;
the task then stops without publishing (its scratch state stays, so a resubmitted grid resumes).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from shared.errors import CotdError
from shared.orchestration.state import GridState

log = logging.getLogger("cotd.worker")


class Cancelled(CotdError):
    """The grid of the running task was cancelled."""


class CancelCheck:
    """A callable (any arguments, so it fits `on_step`/`on_batch` hooks) that raises `Cancelled`."""

    def __init__(self, gs: GridState, every_s: float) -> None:
        self.gs = gs
        self.every_s = every_s
        self._last = float("-inf")

    def __call__(self, *_: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        try:
            status = self.gs.status()
        except redis.RedisError as e:  # a Redis blip does not stop the work
            log.warning("grid=%s: cannot check for cancellation: %s", self.gs.id, e)
            return
        if status == "cancelled":
            raise Cancelled(f"grid {self.gs.id} was cancelled")
