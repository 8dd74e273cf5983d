"""Adaptive concurrency (AIMD) for requests to a teacher server.

The limit starts at the configured maximum. An overload answer (HTTP 429, or 503 "Model is
overloaded") cuts it to 3/4, rounded down (so at least one less), once per congestion episode:
answers to requests that started before the last decrease do not cut it again. The limit it was
cut from is remembered as the ceiling. A run of `limit` successes in a row raises the limit by one, up to the maximum;
the step that would bring it back to the ceiling waits 4 times as long (`4 * limit` successes), so
a server that overloads at a fixed level is probed there rarely while the limit stays just below
it. Past the ceiling (the server got faster) the limit grows at the normal pace again. The current
limit is published on ``cotd_generator_concurrency_limit{teacher}``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.metrics import GENERATOR_CONCURRENCY_LIMIT


class AdaptiveLimiter:
    """A semaphore whose size follows additive-increase / multiplicative-decrease.

    `decrease` is the factor of a cut (3/4) and `hold` how many times longer the step up to the
    last ceiling waits (4; see the module docstring). Waiters queue in FIFO order; a released slot
    is handed to the next waiter directly, without waking the others.
    """

    def __init__(
        self, max_limit: int, teacher: str, min_limit: int = 1, decrease: float = 0.75, hold: int = 4
    ) -> None:
        if max_limit < 1:
            raise ValueError(f"concurrency must be >= 1, got {max_limit}")
        if not 0 < decrease < 1 or hold < 1:
            raise ValueError(f"need 0 < decrease < 1 and hold >= 1, got {decrease}, {hold}")
        self.max_limit = max_limit
        self.min_limit = max(1, min(min_limit, max_limit))
        self.limit = max_limit
        self.ceiling: int | None = None  # the limit of the last cut (overloaded there)
        self.decrease, self.hold = decrease, hold
        self.in_flight = 0
        self.teacher = teacher
        self._epoch = 0  # bumped at each decrease
        self._streak = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._publish()

    def _publish(self) -> None:
        GENERATOR_CONCURRENCY_LIMIT.labels(teacher=self.teacher).set(self.limit)

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch the request starts in (pass it to `overloaded`)."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self._epoch
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over as we were cancelled
            else:
                self._waiters.remove(fut)
            raise
        return self._epoch

    def release(self) -> None:
        """Free a slot and hand it to the next waiter if the limit allows."""
        self.in_flight -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Hold one request slot; yields the epoch the request started in."""
        epoch = await self.acquire()
        try:
            yield epoch
        finally:
            self.release()

    def succeeded(self) -> None:
        """Count a success; after `limit` successes in a row the limit grows by one.

        The step up to the ceiling (the limit of the last cut) needs `hold * limit` successes.
        """
        self._streak += 1
        need = self.limit * (self.hold if self.ceiling is not None and self.limit + 1 == self.ceiling else 1)
        if self._streak >= need and self.limit < self.max_limit:
            self.limit += 1
            self._streak = 0
            self._publish()
            self._hand_over()

    def overloaded(self, epoch: int) -> None:
        """The server asked to back off: cut the limit by `decrease`, rounded down (once per episode)."""
        self._streak = 0
        if epoch != self._epoch:
            return
        self._epoch += 1
        self.ceiling = self.limit
        new = max(self.min_limit, int(self.limit * self.decrease))  # rounded down: at least one less
        if new != self.limit:
            self.limit = new
            self._publish()
