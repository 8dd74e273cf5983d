"""Adaptive concurrency (AIMD) for requests to a teacher server.

The limit starts at the configured maximum. An overload answer (HTTP 429, or 503 "Model is
overloaded") halves it, once per congestion episode: answers to requests that started before the
last decrease do not halve it again. A run of `limit` successes in a row raises it by one, up to
the maximum. The current limit is published on ``cotd_generator_concurrency_limit{teacher}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.metrics import GENERATOR_CONCURRENCY_LIMIT


class AdaptiveLimiter:
    """An asyncio semaphore whose size follows additive-increase / multiplicative-decrease."""

    def __init__(self, max_limit: int, teacher: str, min_limit: int = 1) -> None:
        if max_limit < 1:
            raise ValueError(f"concurrency must be >= 1, got {max_limit}")
        self.max_limit = max_limit
        self.min_limit = max(1, min(min_limit, max_limit))
        self.limit = max_limit
        self.in_flight = 0
        self.teacher = teacher
        self._epoch = 0  # bumped at each decrease
        self._streak = 0
        self._cond = asyncio.Condition()
        self.decreases = 0
        self._publish()

    def _publish(self) -> None:
        GENERATOR_CONCURRENCY_LIMIT.labels(teacher=self.teacher).set(self.limit)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Hold one request slot; yields the epoch the request started in (pass it to `overloaded`)."""
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
            epoch = self._epoch
        try:
            yield epoch
        finally:
            async with self._cond:
                self.in_flight -= 1
                self._cond.notify(max(1, self.limit - self.in_flight))

    def succeeded(self) -> None:
        """Count a success; after `limit` successes in a row the limit grows by one."""
        self._streak += 1
        if self._streak >= self.limit and self.limit < self.max_limit:
            self.limit += 1
            self._streak = 0
            self._publish()
            self._wake()

    def overloaded(self, epoch: int) -> None:
        """The server asked to back off: halve the limit (once per congestion episode)."""
        self._streak = 0
        if epoch != self._epoch:
            return
        self._epoch += 1
        new = max(self.min_limit, self.limit // 2)
        if new != self.limit:
            self.limit = new
            self.decreases += 1
            self._publish()

    def _wake(self) -> None:
        async def _notify() -> None:
            async with self._cond:
                self._cond.notify_all()

        try:
            asyncio.get_running_loop().create_task(_notify())
        except RuntimeError:  # no loop: nobody can be waiting
            pass
