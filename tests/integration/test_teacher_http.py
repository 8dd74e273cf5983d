"""Teacher clients over real HTTP against `cotd teacher serve` with a tiny model (127.0.0.1, free port)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from services.generator.teachers.remote import RunStats, generate_remote
from shared.datasets.base import TaskType, make_question
from shared.specs import CotSetSpec, DatasetRef, TeacherSpec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from services.trainer.tiny import init_tiny

    torch.set_num_threads(1)
    return init_tiny(tmp_path_factory.mktemp("tiny") / "m", size="xs")


@pytest.fixture(scope="module")
def server(tiny_model: Path):
    port = _free_port()
    cmd = [sys.executable, "-c", "from shared.cli import main; main()", "teacher", "serve", "--model", str(tiny_model),
           "--port", str(port), "--threads", "1", "--batch-wait-ms", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ | {"OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"teacher serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("teacher serve did not become healthy")
    yield url
    proc.terminate()
    proc.wait(10)


def _questions(n: int) -> list:
    return [make_question("svamp", f"Tom has {i} apples and buys 2 more. How many now?", str(i + 2), TaskType.NUMBER)
            for i in range(n)]


@pytest.mark.parametrize(
    ("kind", "route", "suffix", "key_env"),
    [("tgi", "generate", "", None), ("tgi", "generate", "/generate", None), ("tgi", "chat", "", None),
     ("openai", "chat", "/v1", "TEST_TEACHER_API_KEY")],
)
def test_clients_over_http(server: str, tiny_model: Path, tmp_path: Path, monkeypatch, kind, route, suffix, key_env) -> None:
    monkeypatch.setenv("TEST_TEACHER_API_KEY", "sk-test")
    t = TeacherSpec(name=f"{kind}-{route}", kind=kind, route=route, model=str(tiny_model), base_url=server + suffix,
                    api_key_env=key_env, max_new_tokens=8, temperature=1.0, concurrency=4, max_retries=1, timeout_s=30)
    spec = CotSetSpec(dataset=DatasetRef(name="svamp"), teacher=t, level=2, format="cot", prompt_version="p1")
    stats = RunStats()
    recs = asyncio.run(generate_remote(spec, _questions(4), tmp_path, stats=stats))
    assert len(recs) == 4 and stats.attempts == 4  # one request each, none failed over the wire
    assert all(r.error is None or r.error.startswith("empty reply") for r in recs)
    assert any(r.rationale and r.rationale.strip() for r in recs)


def test_tgi_shapes(server: str) -> None:
    from huggingface_hub import AsyncInferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    async def main():
        c = AsyncInferenceClient(model=server + "/generate", token="EMPTY")
        out = await c.text_generation("Tom has 3", details=True, max_new_tokens=5, do_sample=False)
        assert out.details.generated_tokens == len(out.details.tokens) <= 5
        assert out.details.finish_reason in ("length", "eos_token")
        plain = await c.text_generation("Tom has 3", max_new_tokens=5)
        assert plain == out.generated_text  # greedy is deterministic
        s = AsyncInferenceClient(model=server + "/generate_stream", token="EMPTY")
        chunks = [ch async for ch in await s.text_generation("Tom has 3", max_new_tokens=5, stream=True, details=True)]
        assert chunks[-1].generated_text == out.generated_text and chunks[-1].details.generated_tokens == len(chunks)
        with pytest.raises(Exception) as e:  # noqa: B017 - huggingface_hub maps TGI's error_type to its own class
            await c.text_generation("x", max_new_tokens=2, temperature=0.0)
        assert type(e.value).__name__ == "ValidationError"
        assert isinstance(e.value.__cause__, HfHubHTTPError) and e.value.__cause__.response.status_code == 422
        chat = AsyncInferenceClient(base_url=server + "/v1", token="EMPTY")
        stream = await chat.chat_completion([{"role": "user", "content": "hi"}], max_tokens=4, stream=True)
        pieces = [ch.choices[0].delta.content async for ch in stream]
        assert len(pieces) >= 1
        await c.close()
        await s.close()
        await chat.close()

    asyncio.run(main())
    import json

    with urllib.request.urlopen(server + "/info") as r:
        info = json.loads(r.read())
    assert info["model_pipeline_tag"] == "text-generation" and "max_input_tokens" in info


def test_requests_arriving_together_are_batched(tiny_model: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from services.generator.server import Engine, ServeConfig, make_app

    engine = Engine(ServeConfig(model=str(tiny_model), threads=1, batch_wait_ms=30, max_batch=8))

    async def main():
        async with TestClient(TestServer(make_app(engine))) as client:
            async def one(i: int):
                r = await client.post("/generate", json={"inputs": f"Tom has {i}", "parameters": {"max_new_tokens": 3}})
                assert r.status == 200
                return (await r.json())["generated_text"]

            single = await one(5)
            texts = await asyncio.gather(*(one(i) for i in range(8)))
            assert texts[5] == single  # left padding does not change a greedy answer
            return texts

    asyncio.run(main())
    assert max(engine.batches) > 1
