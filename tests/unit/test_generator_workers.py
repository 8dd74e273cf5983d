"""`generate_remote`'s workers: bounded tasks, back-offs that do not hold a worker, a stop that stops."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from services.generator.teachers.remote import Reply, generate_remote, journal_path
from services.generator.teachers.retry import RetryPolicy
from shared.specs import CotSetSpec, DatasetRef, TeacherSpec
from tests.unit.evaluator_student import arith_questions


def _spec(concurrency: int, timeout_s: float = 30) -> CotSetSpec:
    t = TeacherSpec(
        name="t",
        kind="openai",
        model="m",
        base_url="http://127.0.0.1:9/v1",
        concurrency=concurrency,
        timeout_s=timeout_s,
    )
    return CotSetSpec(
        dataset=DatasetRef(name="arith", train_size=200),
        teacher=t,
        level=1,
        format="cot",
        prompt_version="v1",
    )


class Teacher:
    """Answers after `wait_s`; the first call for each question in `fail_once` times out instead."""

    def __init__(self, wait_s: float = 0.001, fail_once: set[str] | None = None) -> None:
        self.wait_s, self.fail_once = wait_s, set(fail_once or ())
        self.started: list[str] = []
        self.most_tasks = 0

    async def complete(self, messages):
        q = messages[-1]["content"]
        self.started.append(q)
        self.most_tasks = max(self.most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(self.wait_s)
        if q in self.fail_once:
            self.fail_once.discard(q)
            raise TimeoutError("slow")
        return Reply(text="Add them. The answer is 3")

    async def close(self) -> None:
        pass


def _journal_ids(spec: CotSetSpec, work: Path) -> list[str]:
    return [json.loads(line)["id"] for line in journal_path(spec, work).read_text().splitlines()]


def test_a_long_question_list_runs_on_as_many_tasks_as_the_concurrency(tmp_path: Path) -> None:
    qs = arith_questions(200)
    teacher = Teacher()
    recs = asyncio.run(generate_remote(_spec(4), qs, tmp_path, client=teacher))
    assert [r.id for r in recs] == [q.id for q in qs] and all(r.error is None for r in recs)
    assert len(teacher.started) == 200
    assert teacher.most_tasks <= 4 + 2  # four workers, the run itself and the deadline watchdog


def test_an_item_backing_off_does_not_hold_up_the_next_ones(tmp_path: Path) -> None:
    qs = arith_questions(6)
    spec = _spec(1)
    teacher = Teacher(fail_once={qs[0].text})
    recs = asyncio.run(
        generate_remote(spec, qs, tmp_path, RetryPolicy(base_s=0.3, cap_s=0.3), client=teacher)
    )
    assert all(r.error is None for r in recs)
    ids = _journal_ids(spec, tmp_path)
    assert ids[-1] == qs[0].id and ids[:-1] == [q.id for q in qs[1:]]  # the others finished meanwhile
    assert teacher.started.count(qs[0].text) == 2


class Stop(Exception):
    pass


def test_a_stop_cancels_the_other_workers_and_the_back_offs(tmp_path: Path) -> None:
    qs = arith_questions(40)
    spec = _spec(4)
    teacher = Teacher(wait_s=0.01, fail_once={q.text for q in qs[:4]})
    finished = 0

    def check() -> None:
        nonlocal finished
        finished += 1
        if finished == 3:
            raise Stop

    async def main() -> int:
        with pytest.raises(Stop):
            await generate_remote(
                spec, qs, tmp_path, RetryPolicy(base_s=0.05, cap_s=0.05), client=teacher, check=check
            )
        asked = len(teacher.started)
        await asyncio.sleep(0.3)  # past every back-off and reply time: nothing may start now
        return asked

    asked = asyncio.run(main())
    assert len(teacher.started) == asked < len(qs)
    assert 3 <= len(_journal_ids(spec, tmp_path)) <= 3 + 4  # replies already in are kept
