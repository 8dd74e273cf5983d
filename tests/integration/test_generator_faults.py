"""Teacher clients against a protocol-exact test server that injects 429/503/timeouts; resume after a kill."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from services.generator.build import build_cotset
from services.generator.teachers.remote import RunStats, generate_remote, journal_path
from services.generator.teachers.retry import RetryPolicy
from shared.cotset import CotRecord
from shared.datasets.base import TaskType, make_question
from shared.specs import CotSetSpec, DatasetRef, TeacherSpec

FAST = RetryPolicy(base_s=0.01, cap_s=0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultServer:
    """TGI/OpenAI-shaped answers; a share of requests get 429, 503 or a stall past the client timeout."""

    def __init__(
        self, fault_rate: float = 0.0, stall_s: float = 1.0, delay_s: float = 0.0, seed: int = 0, reply=None
    ) -> None:
        self.fault_rate, self.stall_s, self.delay_s = fault_rate, stall_s, delay_s
        self.rng = random.Random(seed)
        self.requests: Counter[str] = Counter()  # question text -> requests seen
        self.answered: Counter[str] = Counter()  # question text -> 200 answers sent
        self.faults: Counter[str] = Counter()
        self.reply = reply or (lambda q: f"We add the numbers. The answer is {q.split('#')[-1].strip()}")
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _fault(self) -> web.Response | None:
        r = self.rng.random()
        if r >= self.fault_rate:
            return None
        kind = self.rng.choice(["429", "503", "timeout"])
        self.faults[kind] += 1
        if kind == "429":
            return web.json_response({"error": "Model is overloaded", "error_type": "overloaded"}, status=429)
        if kind == "503":
            return web.json_response({"error": "Model is overloaded", "error_type": "overloaded"}, status=503)
        await asyncio.sleep(self.stall_s)
        return web.json_response({"error": "late"}, status=500)

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        q = body["messages"][-1]["content"]
        self.requests[q] += 1
        if (f := await self._fault()) is not None:
            return f
        await asyncio.sleep(self.delay_s)
        self.answered[q] += 1
        text = self.reply(q)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "m"),
                "system_fingerprint": "3.0.0-native",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17},
            }
        )

    async def generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        q = (
            body["inputs"].split("<|user|>")[-1].split("<|")[0].strip()
            if "<|user|>" in body["inputs"]
            else body["inputs"]
        )
        self.requests[q] += 1
        if (f := await self._fault()) is not None:
            return f
        self.answered[q] += 1
        text = self.reply(q)
        out = {"generated_text": text}
        if body.get("parameters", {}).get("details"):
            out["details"] = {
                "finish_reason": "eos_token",
                "generated_tokens": 7,
                "seed": None,
                "prefill": [],
                "tokens": [{"id": 1, "text": text, "logprob": -0.1, "special": False}],
                "top_tokens": None,
                "best_of_sequences": None,
            }
        return web.json_response(out)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/generate", self.generate)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> FaultServer:
        self.thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _questions(n: int) -> list:
    return [
        make_question("svamp", f"Question {i}: how many? # {i + 1}", str(i + 1), TaskType.NUMBER)
        for i in range(n)
    ]


def _spec(url: str, **kw) -> CotSetSpec:
    t = TeacherSpec(name="fault-teacher", kind="openai", model="m", base_url=url, **kw)
    return CotSetSpec(dataset=DatasetRef(name="svamp"), teacher=t, level=3, format="cot", prompt_version="p1")


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory) -> Path:
    """A small tokenizer with a chat template (the tgi /generate route applies it client-side)."""
    from services.trainer.tiny import train_tokenizer

    tok = train_tokenizer(
        ["Question 1: how many? # 2", "We add the numbers. The answer is 3"], vocab_size=300
    )
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
    )
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["openai", "tgi-generate"])
def test_faults_every_item_generated_or_failed_no_duplicates(tmp_path: Path, kind: str, request) -> None:
    qs = _questions(120)
    with FaultServer(fault_rate=0.3, stall_s=0.6) as srv:
        if kind == "openai":
            spec = _spec(srv.url, concurrency=16, max_retries=8, timeout_s=0.3)
        else:
            t = TeacherSpec(
                name="fault-tgi",
                kind="tgi",
                route="generate",
                model=str(request.getfixturevalue("chat_tokenizer")),
                base_url=srv.url.removesuffix("/v1"),
                concurrency=16,
                max_retries=8,
                timeout_s=0.3,
            )
            spec = CotSetSpec(
                dataset=DatasetRef(name="svamp"), teacher=t, level=3, format="cot", prompt_version="p1"
            )
        stats = RunStats()
        recs = asyncio.run(generate_remote(spec, qs, tmp_path, FAST, stats=stats))
    assert [r.id for r in recs] == [q.id for q in qs]  # every item, in order, once
    assert len({r.id for r in recs}) == len(qs)
    ok = [r for r in recs if r.error is None]
    failed = [r for r in recs if r.error is not None]
    assert len(ok) + len(failed) == len(qs)
    assert all("The answer is" in r.rationale for r in ok)
    assert all(srv.answered[q.text] <= 1 for q in qs)  # never re-asked once answered
    assert set(srv.faults) == {"429", "503", "timeout"}
    assert stats.min_limit < 16  # overloads cut the adaptive limit
    lines = [CotRecord.model_validate_json(x) for x in journal_path(spec, tmp_path).read_text().splitlines()]
    assert len(lines) == len(qs) and len({r.id for r in lines}) == len(qs)


def test_item_that_keeps_failing_is_recorded_not_dropped(tmp_path: Path) -> None:
    qs = _questions(5)
    with FaultServer(fault_rate=1.0, stall_s=0.3) as srv:
        spec = _spec(srv.url, concurrency=4, max_retries=2, timeout_s=0.2)
        recs = asyncio.run(generate_remote(spec, qs, tmp_path, FAST))
    assert len(recs) == 5 and all(r.error and "failed after 3 attempt" in r.error for r in recs)
    assert all(srv.requests[q.text] == 3 for q in qs)


def test_unparsed_reply_kept_raw(tmp_path: Path) -> None:
    train = tmp_path / "train.json"
    rows = [{"instruction": f"Question {i}: how many? # {i + 1}", "output": str(i + 1)} for i in range(4)]
    train.write_text(json.dumps(rows))

    def reply(q: str) -> str:
        return (
            "I think it is about seven, more or less."
            if q.startswith("Question 0")
            else f"So. The answer is {q.split('#')[-1].strip()}"
        )

    with FaultServer(reply=reply) as srv:
        t = TeacherSpec(name="t", kind="openai", model="m", base_url=srv.url, concurrency=2)
        spec = CotSetSpec(
            dataset=DatasetRef(name="svamp", train_file=str(train)),
            teacher=t,
            level=1,
            format="cot",
            prompt_version="p1",
        )
        manifest = build_cotset(spec, tmp_path / "work", tmp_path / "out")
    recs = [json.loads(x) for x in (tmp_path / "out" / "cot.jsonl").read_text().splitlines()]
    bad = next(r for r in recs if r["question"].startswith("Question 0"))
    assert bad["rationale"] == "I think it is about seven, more or less."
    assert bad["parsed"] is False and bad["error"] is None
    assert sum(r["parsed"] for r in recs) == 3
    assert manifest["stats"]["answer_parsed_rate"] == pytest.approx(0.75)
    assert manifest["stats"]["teacher_accuracy"] == pytest.approx(0.75)
    assert manifest["tokenizer"] == "regex-fallback" and manifest["stats"]["mean_tokens"] > 0


def test_killed_generation_resumes_without_rerequesting(tmp_path: Path) -> None:
    n = 60
    train = tmp_path / "train.json"
    train.write_text(
        json.dumps(
            [{"instruction": f"Question {i}: how many? # {i + 1}", "output": str(i + 1)} for i in range(n)]
        )
    )
    out = tmp_path / "set"
    with FaultServer(delay_s=0.15) as srv:
        cmd = [
            sys.executable,
            "-c",
            "from shared.cli import main; main()",
            "generate",
            "--teacher",
            "openai",
            "--model",
            "m",
            "--base-url",
            srv.url,
            "--dataset",
            "svamp",
            "--train-file",
            str(train),
            "--level",
            "2",
            "--concurrency",
            "4",
            "--out",
            str(out),
        ]
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.time() + 60
        while sum(srv.answered.values()) < n // 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        journal = next(out.glob("teacher-*.jsonl"))
        done_first = {json.loads(x)["question"] for x in journal.read_text().splitlines() if x.strip()}
        assert 0 < len(done_first) < n
        before = Counter(srv.requests)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    second = srv.requests - before
    assert not (set(second) & done_first)  # finished items were not requested again
    assert set(second) | done_first >= {f"Question {i}: how many? # {i + 1}" for i in range(n)}
    recs = [json.loads(x) for x in (out / "cot.jsonl").read_text().splitlines()]
    assert len(recs) == n and len({r["id"] for r in recs}) == n and all(r["error"] is None for r in recs)
    assert json.loads(res.stdout.strip().splitlines()[-1])["items"] == n
