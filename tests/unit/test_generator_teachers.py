"""Adaptive concurrency, retry classification, the resume journal and the offline teachers."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from services.generator.stats import (
    FALLBACK_TOKENIZER,
    count_steps,
    distinct_n,
    fallback_tokens,
    token_counter,
)
from services.generator.teachers.concurrency import AdaptiveLimiter
from services.generator.teachers.offline import recorded_records
from services.generator.teachers.remote import (
    Journal,
    Reply,
    RunStats,
    generate_remote,
    generate_url,
    server_root,
)
from services.generator.teachers.retry import RetryPolicy, classify
from shared.cotset import CotRecord
from shared.datasets.base import DatasetError, TaskType, make_question
from shared.metrics import GENERATOR_CONCURRENCY_LIMIT
from shared.specs import CotSetSpec, DatasetRef, TeacherSpec


def _http_error(code: int) -> HfHubHTTPError:
    req = httpx2.Request("POST", "http://x/generate")
    resp = httpx2.Response(
        code, request=req, headers={"retry-after": "2"}, json={"error": "Model is overloaded"}
    )
    return HfHubHTTPError(f"{code} error", response=resp)


def test_classify() -> None:
    for code in (429, 503):
        f = classify(_http_error(code))
        assert f.overloaded and f.retryable and f.http_code == code and f.retry_after == 2.0
    assert classify(_http_error(500)).retryable and not classify(_http_error(500)).overloaded
    assert not classify(_http_error(401)).retryable and not classify(_http_error(422)).retryable
    assert classify(InferenceTimeoutError("slow")).status == "timeout"
    assert classify(TimeoutError()).retryable
    assert classify(httpx2.ConnectError("refused")).retryable
    assert not classify(KeyError("choices")).retryable


def test_backoff_grows_with_jitter_and_cap() -> None:
    p = RetryPolicy(base_s=1.0, cap_s=8.0)
    rng = random.Random(0)
    d = [p.delay(a, rng=rng) for a in range(6)]
    assert all(0.5 * min(8, 2**a) <= x <= min(8, 2**a) for a, x in enumerate(d))
    assert p.delay(0, retry_after=5.0) >= 5.0 and p.delay(0, retry_after=100.0) <= 8.0


def test_aimd_limiter() -> None:
    async def main() -> None:
        lim = AdaptiveLimiter(8, "unit-aimd")
        epochs = [await lim.acquire() for _ in range(8)]
        assert lim.in_flight == 8
        waiter = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()
        for e in epochs[:3]:  # three overloads from one episode cut once, to 3/4
            lim.overloaded(e)
        assert lim.limit == 6 and lim.ceiling == 8
        assert GENERATOR_CONCURRENCY_LIMIT.labels(teacher="unit-aimd")._value.get() == 6
        for _ in range(8):
            lim.release()
        await asyncio.sleep(0)
        assert waiter.done() and lim.in_flight == 1
        lim.overloaded(await waiter)  # a new episode cuts again: 6 -> 4, ceiling 6
        assert lim.limit == 4 and lim.ceiling == 6
        for _ in range(4):
            lim.succeeded()
        assert lim.limit == 5  # a run of `limit` successes adds one
        for _ in range(4 * 5 - 1):
            lim.succeeded()
        assert lim.limit == 5  # the step back up to the ceiling waits 4x longer
        lim.succeeded()
        assert lim.limit == 6
        for _ in range(6):
            lim.succeeded()
        assert lim.limit == 7  # past the ceiling: the normal pace again
        lim.release()

    asyncio.run(main())


def test_aimd_limiter_cuts_at_least_one_and_stops_at_min() -> None:
    lim = AdaptiveLimiter(3, "unit-aimd-small", min_limit=1)
    for want in (2, 1, 1):  # int(3 * 0.75) = 2, int(2 * 0.75) = 1, then the floor
        lim.overloaded(lim._epoch)
        assert lim.limit == want
    lim = AdaptiveLimiter(5, "unit-aimd-params", decrease=0.5, hold=1)
    lim.overloaded(lim._epoch)
    assert lim.limit == 2 and lim.ceiling == 5
    for _ in range(2 + 3 + 4):  # hold=1: no pause below the ceiling
        lim.succeeded()
    assert lim.limit == 5
    for bad in ({"decrease": 1.0}, {"decrease": 0.0}, {"hold": 0}):
        with pytest.raises(ValueError):
            AdaptiveLimiter(4, "unit-aimd-bad", **bad)


def test_aimd_limiter_settles_below_a_fixed_overload_point() -> None:
    """A server that overloads above 6 in flight: most of the time the limit sits at 6."""
    lim = AdaptiveLimiter(8, "unit-aimd-sim")
    seen = []
    for _ in range(5000):  # one request at a time, at the limit's level of load
        if lim.limit > 6:
            lim.overloaded(lim._epoch)
        else:
            lim.succeeded()
        seen.append(lim.limit)
    late = seen[1000:]
    assert late.count(6) / len(late) > 0.75 and min(late) >= 5 and max(late) <= 7


def test_generate_remote_uses_the_callers_limiter(tmp_path: Path) -> None:
    """A limiter passed in is the one that adapts (the bench reads its limit); 429s are retried."""

    class Busy:
        def __init__(self) -> None:
            self.calls = 0

        async def complete(self, messages: list[dict[str, str]]) -> Reply:
            self.calls += 1
            call = self.calls
            await asyncio.sleep(0)  # every first request is in flight before the first answer
            if call <= 2:
                raise _http_error(429)
            return Reply(text="3 + 4 = 7. The answer is 7")

        async def close(self) -> None:
            pass

    t = TeacherSpec(name="unit-busy", kind="openai", model="m", base_url="http://x/v1", concurrency=8)
    spec = CotSetSpec(dataset=DatasetRef(name="svamp"), teacher=t, level=3, format="cot", prompt_version="p1")
    qs = [make_question("svamp", f"Q{i}: 3 + 4?", "7", TaskType.NUMBER) for i in range(4)]
    lim, stats = AdaptiveLimiter(8, "unit-busy"), RunStats()
    policy = RetryPolicy(base_s=0.001, cap_s=0.001, honor_retry_after=False)
    recs = asyncio.run(generate_remote(spec, qs, tmp_path, policy, client=Busy(), stats=stats, limiter=lim))
    assert all(r.error is None for r in recs) and stats.attempts == 6
    assert lim.ceiling == 8 and lim.limit == 6 and stats.min_limit == 6  # both 429s were one episode


def test_journal_skips_torn_line(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.jsonl")
    j.append(CotRecord(id="a", question="q", rationale="r. The answer is 1"))
    j.close()
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('{"id": "b", "quest')  # killed mid-write
    assert list(j.load()) == ["a"]
    j.append(CotRecord(id="c", question="q", rationale="The answer is 2"))
    j.close()
    assert list(j.load()) == ["a", "c"]


def test_urls() -> None:
    assert generate_url("http://h:80") == "http://h:80/generate"
    assert generate_url("http://h:80/generate/") == "http://h:80/generate"
    assert (
        server_root("http://h/v1/chat/completions") == "http://h" and server_root("http://h/v1") == "http://h"
    )


def test_stats_helpers() -> None:
    assert fallback_tokens("3+4=7. The answer is 7") == 10
    assert token_counter(None) == (fallback_tokens, FALLBACK_TOKENIZER)
    assert token_counter("/nonexistent/model")[1] == FALLBACK_TOKENIZER
    assert count_steps("First a. Then b.\nSo c. The answer is 3") == 3
    assert distinct_n(["a b a b"]) == pytest.approx(2 / 3)


def _recorded_spec(path: Path) -> CotSetSpec:
    t = TeacherSpec(name="rec", kind="recorded", files=str(path))
    return CotSetSpec(
        dataset=DatasetRef(name="svamp"), teacher=t, level=1, format="cot", prompt_version="recorded"
    )


def test_recorded_alpaca_jsonl_and_missing_questions(tmp_path: Path) -> None:
    f = tmp_path / "set.jsonl"
    f.write_text(
        "\n".join(
            json.dumps({"instruction": f"Q{i} how many?", "output": f"Add. The answer is {i}"})
            for i in range(3)
        )
    )
    qs = [make_question("svamp", f"Q{i}  how many?", str(i), TaskType.NUMBER) for i in range(4)]
    recs = recorded_records(_recorded_spec(f), qs)
    assert [r.id for r in recs] == [q.id for q in qs]
    assert recs[1].rationale == "Add. The answer is 1" and recs[3].error and "set.jsonl" in recs[3].error


def test_recorded_malformed_names_file_and_index(tmp_path: Path) -> None:
    f = tmp_path / "SVAMP_bad_level1.json"
    f.write_text(
        json.dumps([{"instruction": "a", "output": "The answer is 1"}, {"instruction": "b", "output": 3}])
    )
    with pytest.raises(DatasetError, match=r"SVAMP_bad_level1.json: index 1: field 'output'"):
        recorded_records(_recorded_spec(f), [])
