"""`Deadlines`: one watchdog task enforcing per-task deadlines, as `asyncio.timeout` would."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.generator.teachers.deadlines import Deadlines, tick_for


async def _with_deadlines(body, tick_s: float = 0.01):
    d = Deadlines(tick_s)
    d.start()
    try:
        return await body(d)
    finally:
        await d.stop()


def test_a_block_past_its_deadline_raises_timeout_and_the_task_goes_on() -> None:
    async def body(d: Deadlines):
        start = time.perf_counter()
        with pytest.raises(TimeoutError, match="0.05 s"):
            with d.within(0.05):
                await asyncio.sleep(5)
        waited = time.perf_counter() - start
        await asyncio.sleep(0.01)  # the task is not left cancelled
        return waited, asyncio.current_task().cancelling()

    waited, cancelling = asyncio.run(_with_deadlines(body))
    assert 0.05 <= waited < 1.0
    assert cancelling == 0


def test_a_block_that_ends_in_time_is_not_cancelled_later() -> None:
    async def body(d: Deadlines):
        with d.within(0.03):
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.1)  # well past the deadline: nothing fires
        return "done", len(d._due)

    assert asyncio.run(_with_deadlines(body)) == ("done", 0)


def test_an_outside_cancellation_passes_through_unchanged() -> None:
    async def body(d: Deadlines):
        async def guarded():
            with d.within(10):
                await asyncio.sleep(10)

        task = asyncio.create_task(guarded())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(d._due)

    assert asyncio.run(_with_deadlines(body)) == 0


def test_many_tasks_each_get_their_own_deadline() -> None:
    async def body(d: Deadlines):
        async def one(wait: float) -> str:
            try:
                with d.within(0.1):
                    await asyncio.sleep(wait)
            except TimeoutError:
                return "timeout"
            return "ok"

        return await asyncio.gather(*(one(0.005 if i % 2 else 2.0) for i in range(100)))

    assert asyncio.run(_with_deadlines(body)) == ["timeout", "ok"] * 50


def test_outside_a_task_and_bad_ticks_are_refused() -> None:
    with pytest.raises(ValueError, match="tick_s"):
        Deadlines(0)
    with pytest.raises(RuntimeError, match="running"), Deadlines(1).within(1):
        pass
    assert tick_for(120) == 1.0 and tick_for(0.2) == 0.01 and tick_for(2) == pytest.approx(0.1)
