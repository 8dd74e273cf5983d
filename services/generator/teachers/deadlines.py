"""Per-request deadlines for many concurrent requests, checked by one periodic task.

`asyncio.timeout` schedules and cancels a loop timer for every request; at a few hundred requests
per second that bookkeeping is a measurable share of the client's event loop (bench/generator.py).
`Deadlines` keeps the deadline of each task in a dict instead, and one watchdog task wakes every
`tick_s` and cancels the tasks that are past theirs. A deadline therefore fires up to `tick_s`
late, which is immaterial next to request timeouts of seconds to minutes.

As with `asyncio.timeout`, the cancellation lands inside the guarded block (a task's entry is
removed in the same step that leaves the block) and comes out of it as `TimeoutError`; any other
cancellation of the task passes through unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


def tick_for(timeout_s: float) -> float:
    """The watchdog period for a timeout: a twentieth of it, between 10 ms and 1 s."""
    return min(1.0, max(0.01, timeout_s / 20))


class Deadlines:
    """Deadlines of the running tasks, enforced by a watchdog started with `start()`."""

    def __init__(self, tick_s: float) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.tick_s = tick_s
        self._due: dict[asyncio.Task, float] = {}
        self._fired: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None

    def start(self) -> None:
        """Start the watchdog on the running loop."""
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Stop the watchdog (deadlines still registered no longer fire)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass
            self._watchdog = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            for task in [t for t, due in self._due.items() if due <= now]:
                del self._due[task]
                self._fired.add(task)
                task.cancel()

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Guard the awaits in the block: past `seconds`, they raise `TimeoutError` (one block per task)."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.within needs a running task")
        self._due[task] = asyncio.get_running_loop().time() + seconds
        try:
            yield
        except asyncio.CancelledError:
            if task in self._fired:
                task.uncancel()
                raise TimeoutError(f"no reply within {seconds:g} s") from None
            raise
        finally:
            self._due.pop(task, None)
            self._fired.discard(task)
