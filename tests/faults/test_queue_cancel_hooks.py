"""The cancellation hooks of the stage loops (#18.8): the check is rate-limited, and the generator
and evaluator stop at the next item or batch, keeping what they finished for a rerun."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.integration.services import redis_db

REDIS_DB = 8


class CountingGrid:
    """A GridState whose status reads are counted (the Redis reads are real)."""

    def __new__(cls, r, grid_id):
        from shared.orchestration.state import GridState

        class Counting(GridState):
            reads = 0

            def status(self):
                Counting.reads += 1
                return super().status()

        return Counting(r, grid_id)


def test_cancel_check_is_rate_limited_and_raises_once_cancelled():
    import redis

    from shared.orchestration.cancel import CancelCheck, Cancelled

    r = redis.Redis.from_url(redis_db(REDIS_DB))
    gs = CountingGrid(r, "g-cancel")
    gs.set_meta(status="running")
    check = CancelCheck(gs, every_s=3600)
    for step in range(1000):
        check({"step": step})
    assert type(gs).reads == 1  # one Redis read for a thousand steps
    gs.set_meta(status="cancelled")
    check()  # not read again before `every_s`
    with pytest.raises(Cancelled, match="g-cancel"):
        CancelCheck(gs, every_s=0)()


def journal_records(path: Path) -> list[dict]:
    """The raw journal lines of a teacher's work folder."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Stop(Exception):
    pass


def stop_after(n: int):
    calls = []

    def check(*_):
        calls.append(1)
        if len(calls) >= n:
            raise Stop(f"after {n}")

    return check


def test_generator_stops_at_the_next_item(tmp_path: Path):
    from services.generator.teachers.remote import Reply, generate_remote, journal_path
    from shared.specs import CotSetSpec, DatasetRef, TeacherSpec
    from tests.unit.evaluator_student import arith_questions

    class Teacher:  # answers at once, like a server with a warm cache
        async def complete(self, messages):
            await asyncio.sleep(0.001)
            return Reply(text="Add them. The answer is 3")

        async def close(self):
            pass

    t = TeacherSpec(name="t", kind="openai", model="m", base_url="http://127.0.0.1:9/v1", concurrency=2)
    spec = CotSetSpec(dataset=DatasetRef(name="arith", train_size=20), teacher=t, level=1, format="cot", prompt_version="v1")
    qs = arith_questions(20)
    with pytest.raises(Stop):
        asyncio.run(generate_remote(spec, qs, tmp_path, client=Teacher(), check=stop_after(3)))
    kept = journal_records(journal_path(spec, tmp_path))
    assert 3 <= len(kept) <= 3 + t.concurrency < len(qs)  # stopped, and the replies so far are kept
    done = asyncio.run(generate_remote(spec, qs, tmp_path, client=Teacher()))
    assert len(done) == len(qs) and len(journal_records(journal_path(spec, tmp_path))) == len(qs)


def test_evaluator_stops_after_the_batch_it_saved(tmp_path: Path):
    from services.evaluator.evaluate import PARTIAL, evaluate_model
    from shared.config import EvaluationConfig
    from tests.unit.evaluator_student import arith_questions, tiny_student

    student = tiny_student()
    qs = arith_questions(12)
    cfg = EvaluationConfig(test_size=12, max_new_tokens=24, batch_size=4)
    with pytest.raises(Stop):
        evaluate_model(student, qs, tmp_path, cfg, device_setting="cpu", check=stop_after(1))
    lines = (tmp_path / PARTIAL).read_text().splitlines()
    assert "_resume" in json.loads(lines[0]) and len(lines) == 1 + 4  # one batch made and kept
    assert not (tmp_path / "predictions.jsonl").exists()
    metrics = evaluate_model(student, qs, tmp_path, cfg, device_setting="cpu")
    assert metrics["resumed"] == 4 and metrics["n"] == 12
