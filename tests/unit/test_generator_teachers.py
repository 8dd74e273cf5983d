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
from services.generator.teachers.remote import Journal, generate_url, server_root
from services.generator.teachers.retry import RetryPolicy, classify
from shared.cotset import CotRecord
from shared.datasets.base import DatasetError, TaskType, make_question
from shared.metrics import GENERATOR_CONCURRENCY_LIMIT
from shared.specs import CotSetSpec, DatasetRef, TeacherSpec


def _http_error(code: int) -> HfHubHTTPError:
    req = httpx2.Request("POST", "http://x/generate")
    resp = httpx2.Response(code, request=req, headers={"retry-after": "2"}, json={"error": "Model is overloaded"})
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
        for e in epochs[:3]:  # three overloads from one episode halve once
            lim.overloaded(e)
        assert lim.limit == 4 and GENERATOR_CONCURRENCY_LIMIT.labels(teacher="unit-aimd")._value.get() == 4
        for _ in range(8):
            lim.release()
        await asyncio.sleep(0)
        assert waiter.done() and lim.in_flight == 1
        lim.overloaded(await waiter)  # a new episode halves again
        assert lim.limit == 2
        for _ in range(2):
            lim.succeeded()
        assert lim.limit == 3  # a run of `limit` successes adds one
        lim.release()

    asyncio.run(main())


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
    assert server_root("http://h/v1/chat/completions") == "http://h" and server_root("http://h/v1") == "http://h"


def test_stats_helpers() -> None:
    assert fallback_tokens("3+4=7. The answer is 7") == 10
    assert token_counter(None) == (fallback_tokens, FALLBACK_TOKENIZER)
    assert token_counter("/nonexistent/model")[1] == FALLBACK_TOKENIZER
    assert count_steps("First a. Then b.\nSo c. The answer is 3") == 3
    assert distinct_n(["a b a b"]) == pytest.approx(2 / 3)


def _recorded_spec(path: Path) -> CotSetSpec:
    t = TeacherSpec(name="rec", kind="recorded", files=str(path))
    return CotSetSpec(dataset=DatasetRef(name="svamp"), teacher=t, level=1, format="cot", prompt_version="recorded")


def test_recorded_alpaca_jsonl_and_missing_questions(tmp_path: Path) -> None:
    f = tmp_path / "set.jsonl"
    f.write_text("\n".join(json.dumps({"instruction": f"Q{i} how many?", "output": f"Add. The answer is {i}"}) for i in range(3)))
    qs = [make_question("svamp", f"Q{i}  how many?", str(i), TaskType.NUMBER) for i in range(4)]
    recs = recorded_records(_recorded_spec(f), qs)
    assert [r.id for r in recs] == [q.id for q in qs]
    assert recs[1].rationale == "Add. The answer is 1" and recs[3].error and "set.jsonl" in recs[3].error


def test_recorded_malformed_names_file_and_index(tmp_path: Path) -> None:
    f = tmp_path / "SVAMP_bad_level1.json"
    f.write_text(json.dumps([{"instruction": "a", "output": "The answer is 1"}, {"instruction": "b", "output": 3}]))
    with pytest.raises(DatasetError, match=r"SVAMP_bad_level1.json: index 1: field 'output'"):
        recorded_records(_recorded_spec(f), [])
