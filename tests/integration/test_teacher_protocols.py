"""`cotd teacher serve` spoken to by third-party clients: huggingface_hub, text-generation, openai.

One server (a subprocess over the tiny xs model: 1,024 positions) answers every test of the module
except the SIGTERM one, which starts its own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.integration.teacher_server import teacher_server

pytestmark = pytest.mark.integration
PROMPT = "Tom has 3 apples and buys 2 more. How many?"


def _info(url: str) -> dict:
    with urllib.request.urlopen(url + "/info", timeout=10) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


def _metrics(url: str) -> dict[str, float]:
    """The server's /metrics, read by prometheus_client's own parser: sample name -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:  # noqa: S310 - loopback
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` (without blocking the loop for long) until true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def _post(session: aiohttp.ClientSession, url: str, body: str | dict) -> tuple[int, dict | list]:
    data = body if isinstance(body, str) else json.dumps(body)
    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json()


# ------------------------------------------------------------------------------------------- limits
def test_info_reports_the_models_real_limits(teacher_url: str, tiny_teacher: Path) -> None:
    positions = json.loads((tiny_teacher / "config.json").read_text())["max_position_embeddings"]
    info = _info(teacher_url)
    assert info["max_total_tokens"] == positions == info["max_position_embeddings"]
    assert info["max_input_tokens"] == positions - 1
    assert info["max_best_of"] == 1 and info["max_stop_sequences"] == 4


def test_huggingface_hub_client_limits_and_validation(teacher_url: str) -> None:
    from huggingface_hub import InferenceClient

    c = InferenceClient(base_url=teacher_url, token="EMPTY")
    limit = _info(teacher_url)["max_total_tokens"]
    with pytest.raises(Exception) as e:  # noqa: B017 - huggingface_hub maps TGI's error_type to its class
        c.text_generation(PROMPT, max_new_tokens=1_000_000_000)
    assert type(e.value).__name__ == "ValidationError" and f"must be <= {limit}" in str(e.value)
    with pytest.raises(Exception) as e:  # noqa: B017
        c.text_generation(PROMPT * 200, max_new_tokens=2)  # ~4,000 tokens > 1,023
    assert type(e.value).__name__ == "ValidationError" and "`inputs` tokens must be <=" in str(e.value)
    out = c.text_generation(PROMPT * 200, max_new_tokens=2, truncate=50, details=True)
    assert out.details.generated_tokens <= 2  # truncated from the left, as asked
    for kwargs, field in (
        ({"top_k": -1, "do_sample": True}, "top_k"),
        ({"best_of": 2, "do_sample": True}, "best_of"),
        ({"top_n_tokens": 50}, "top_n_tokens"),
        ({"watermark": True}, "watermark"),
    ):
        with pytest.raises(Exception) as e:  # noqa: B017
            c.text_generation(PROMPT, max_new_tokens=2, **kwargs)
        assert type(e.value).__name__ == "ValidationError" and f"`{field}`" in str(e.value), (kwargs, e.value)


# --------------------------------------------------------------------------------- huggingface_hub
def test_huggingface_hub_streams_from_the_root_and_generate_stream(teacher_url: str) -> None:
    from huggingface_hub import AsyncInferenceClient, InferenceClient

    c = InferenceClient(base_url=teacher_url, token="EMPTY")
    full = c.text_generation(
        PROMPT, max_new_tokens=6, details=True, decoder_input_details=True, top_n_tokens=2
    )
    assert full.details.generated_tokens == len(full.details.tokens) <= 6
    assert full.details.prefill[0].logprob is None and all(
        t.logprob is not None for t in full.details.prefill[1:]
    )
    assert all(len(top) == 2 for top in full.details.top_tokens)
    chunks = list(
        c.text_generation(PROMPT, max_new_tokens=6, stream=True, details=True)
    )  # POST / with stream
    assert len(chunks) == full.details.generated_tokens
    assert chunks[-1].generated_text == full.generated_text
    assert chunks[-1].details.input_length == len(full.details.prefill)

    async def main() -> list:
        a = AsyncInferenceClient(model=teacher_url + "/generate_stream", token="EMPTY")
        try:
            return [
                ch
                async for ch in await a.text_generation(PROMPT, max_new_tokens=6, stream=True, details=True)
            ]
        finally:
            await a.close()

    achunks = asyncio.run(main())
    assert [ch.token.id for ch in achunks] == [t.id for t in full.details.tokens]
    assert achunks[-1].details.input_length == chunks[-1].details.input_length > 0
    with pytest.raises(Exception) as e:  # noqa: B017 - TGI refuses prefill details on a stream
        list(
            c.text_generation(PROMPT, max_new_tokens=2, stream=True, details=True, decoder_input_details=True)
        )
    assert type(e.value).__name__ == "ValidationError" and "`decoder_input_details`" in str(e.value)


def test_huggingface_hub_chat_with_parts_and_logprobs(teacher_url: str) -> None:
    from huggingface_hub import InferenceClient

    c = InferenceClient(base_url=teacher_url + "/v1", token="EMPTY")
    msgs = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Tom has 3. "}, {"type": "text", "text": "How many?"}],
        }
    ]
    out = c.chat_completion(msgs, max_tokens=5, logprobs=True, top_logprobs=2)
    as_text = c.chat_completion([{"role": "user", "content": "Tom has 3. How many?"}], max_tokens=5)
    assert out.choices[0].message.content == as_text.choices[0].message.content  # parts are joined
    assert all(len(t.top_logprobs) == 2 for t in out.choices[0].logprobs.content)
    streamed = "".join(
        ch.choices[0].delta.content or "" for ch in c.chat_completion(msgs, max_tokens=5, stream=True)
    )
    assert streamed == out.choices[0].message.content


# ---------------------------------------------------------------------------------- text-generation
def test_text_generation_client(teacher_url: str) -> None:
    tg = pytest.importorskip("text_generation", reason="text-generation is installed by .ci/run (--no-deps)")
    c = tg.Client(teacher_url, timeout=60)
    out = c.generate(PROMPT, max_new_tokens=5, decoder_input_details=True, top_n_tokens=1)
    assert out.details.generated_tokens == len(out.details.tokens) and len(out.details.prefill) > 1
    streamed = list(c.generate_stream(PROMPT, max_new_tokens=5))  # POST / with "stream": true
    assert [s.token.id for s in streamed] == [t.id for t in out.details.tokens]
    assert streamed[-1].generated_text == out.generated_text and streamed[-1].details.generated_tokens == len(
        streamed
    )
    with pytest.raises(tg.errors.ValidationError, match="`inputs` tokens"):
        c.generate(PROMPT, max_new_tokens=100_000)

    async def main():
        a = tg.AsyncClient(teacher_url, timeout=60)
        return await a.generate(PROMPT, max_new_tokens=5), [
            s async for s in a.generate_stream(PROMPT, max_new_tokens=5)
        ]

    aout, astream = asyncio.run(main())
    assert aout.generated_text == out.generated_text and astream[-1].generated_text == out.generated_text


# --------------------------------------------------------------------------------------------- openai
def test_openai_client(teacher_url: str) -> None:
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=teacher_url + "/v1", api_key="EMPTY", max_retries=0)
    model = c.models.list().data[0].id
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
    ]
    chat = c.chat.completions.create(
        model=model, messages=msgs, max_tokens=5, n=3, temperature=0.9, seed=3, logprobs=True, top_logprobs=2
    )
    assert [ch.index for ch in chat.choices] == [0, 1, 2] and chat.usage.completion_tokens >= 3
    assert all(
        lp.logprob <= 0 and len(lp.top_logprobs) == 2 for ch in chat.choices for lp in ch.logprobs.content
    )
    again = c.chat.completions.create(model=model, messages=msgs, max_tokens=5, n=3, temperature=0.9, seed=3)
    assert [ch.message.content for ch in again.choices] == [
        ch.message.content for ch in chat.choices
    ]  # seeded
    comp = c.completions.create(
        model=model, prompt=[PROMPT, "Ann has 2"], max_tokens=4, logprobs=2, echo=True
    )
    assert len(comp.choices) == 2 and comp.choices[1].text.startswith("Ann has 2")
    assert all(len(top) == 2 for ch in comp.choices for top in ch.logprobs.top_logprobs)
    pieces = [
        ch.choices[0].text
        for ch in c.completions.create(model=model, prompt=PROMPT, max_tokens=4, stream=True)
    ]
    greedy = c.completions.create(model=model, prompt=PROMPT, max_tokens=4)
    assert "".join(pieces) == greedy.choices[0].text
    bad = (
        ({"temperature": -0.5}, "`temperature`"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "unknown role 'wizard'"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4"),
        ({"messages": []}, "`messages`"),
        ({"n": 100}, "`n`"),
        ({"max_tokens": 100_000}, "`max_tokens`"),
        ({"messages": [{"role": "user", "content": PROMPT * 200}]}, "`messages` tokens must be <= 1023"),
    )
    for kwargs, message in bad:
        with pytest.raises(openai.UnprocessableEntityError, match=message):
            c.chat.completions.create(**({"model": model, "messages": msgs, "max_tokens": 3} | kwargs))


# ------------------------------------------------------------------------------- isolation, load
def test_bad_requests_get_their_own_422_while_the_batch_goes_on(teacher_url: str) -> None:
    bad = {
        2: '{"inputs": "\\ud800", "parameters": {"max_new_tokens": 3}}',
        4: {"inputs": "", "parameters": {"max_new_tokens": 3}},
        6: {"inputs": PROMPT, "parameters": {"top_k": -1, "do_sample": True}},
        8: {"inputs": PROMPT, "parameters": {"max_new_tokens": 3, "frobnicate": 1}},
    }
    fields = {2: "`inputs`", 4: "`inputs`", 6: "`top_k`", 8: "frobnicate"}

    async def main():
        async with aiohttp.ClientSession() as s:
            chat = _post(s, teacher_url + "/v1/chat/completions", {"messages": [], "max_tokens": 3})
            calls = [
                _post(
                    s,
                    teacher_url + "/generate",
                    bad.get(i, {"inputs": f"{PROMPT} {i}", "parameters": {"max_new_tokens": 3}}),
                )
                for i in range(10)
            ]
            return await asyncio.gather(chat, *calls)

    (chat_status, chat_body), *answers = asyncio.run(main())
    assert (
        chat_status == 422
        and "`messages`" in chat_body["error"]["message"]
        and chat_body["error_type"] == "validation"
    )
    for i, (status, body) in enumerate(answers):
        if i in bad:
            assert status == 422 and body["error_type"] == "validation" and fields[i] in body["error"], (
                i,
                body,
            )
        else:
            assert status == 200 and isinstance(body["generated_text"], str), (i, body)


def test_twenty_concurrent_clients_all_get_an_answer_or_a_422(teacher_url: str) -> None:
    """14 good requests, 5 bad ones and 1 with an enormous max_new_tokens; each answered within a generous bound."""
    good = [{"inputs": f"{PROMPT} {i}", "parameters": {"max_new_tokens": 8}} for i in range(14)]
    bad = [
        '{"inputs": "\\ud800"}',
        {"inputs": ""},
        {"inputs": "x", "parameters": {"top_p": 1.5}},
        {"inputs": "x", "parameters": {"max_new_tokens": 0}},
        "not json",
    ]
    huge = {"inputs": PROMPT, "parameters": {"max_new_tokens": 10**12}}
    bodies = good + bad + [huge]

    async def main():
        timeout = aiohttp.ClientTimeout(total=120)  # a bound per request, not a timing assertion
        async with aiohttp.ClientSession(timeout=timeout) as s:
            return await asyncio.gather(*(_post(s, teacher_url + "/generate", b) for b in bodies))

    answers = asyncio.run(main())
    assert [st for st, _ in answers] == [200] * 14 + [422] * 6
    assert all("error" in body and "error_type" in body for _, body in answers[14:])


def test_a_disconnected_client_is_cancelled(tiny_teacher: Path) -> None:
    from aiohttp.test_utils import TestServer

    from services.generator.server import ServeConfig, make_app, make_engine

    engine = make_engine(ServeConfig(model=str(tiny_teacher), threads=1, batch_wait_ms=1))

    async def main():
        async with TestServer(make_app(engine)) as srv, aiohttp.ClientSession() as s:
            url = str(srv.make_url("/generate_stream"))
            body = {"inputs": "a", "parameters": {"max_new_tokens": 1000}}
            async with s.post(url, json=body) as r:
                await r.content.readline()  # the first token arrived: the row is decoding
            # the client is gone: the server drops the row and releases the request
            for _ in range(300):
                if engine.cancelled_rows and engine.inflight == 0:
                    break
                await asyncio.sleep(0.1)
            return engine.cancelled_rows, engine.inflight

    cancelled, inflight = asyncio.run(main())
    assert cancelled == 1 and inflight == 0


def test_a_short_request_finishes_while_a_long_one_still_streams(teacher_url: str) -> None:
    """A 2-token request is answered while a maximal streamed one decodes: rows finish on their own."""
    from huggingface_hub import AsyncInferenceClient

    long_new = _info(teacher_url)["max_total_tokens"] - 8  # the most allowed after a prompt of a few tokens

    async def main():
        streamer = AsyncInferenceClient(model=teacher_url + "/generate_stream", token="EMPTY")
        short = AsyncInferenceClient(model=teacher_url + "/generate", token="EMPTY")
        chunks: list = []

        async def long() -> None:
            stream = await streamer.text_generation("a", max_new_tokens=long_new, stream=True, details=True)
            async for ch in stream:
                chunks.append(ch)

        task = asyncio.create_task(long())
        try:
            await _until(lambda: bool(chunks) or task.done(), 120, "the long request's first token")
            assert not task.done(), task.result()  # its row is decoding
            out = await short.text_generation(PROMPT, max_new_tokens=2, details=True)
            open_then, seen_then = not task.done(), len(chunks)
            await asyncio.wait_for(task, 300)  # a bound, not a timing assertion
            return out, open_then, seen_then, chunks
        finally:
            task.cancel()
            await streamer.close()
            await short.close()

    out, open_then, seen_then, chunks = asyncio.run(main())
    assert out.details.generated_tokens == 2 and out.details.finish_reason == "length"
    assert open_then, "the 2-token request waited for the long one to end"
    assert seen_then < len(chunks) == long_new  # the long stream went on after the short answer
    assert chunks[-1].details.finish_reason == "length"


def test_a_closed_non_streamed_client_is_cancelled_by_the_server(teacher_url: str) -> None:
    """A `/generate` (not streamed) client that hangs up mid-request: the real server drops its row."""
    long_new = _info(teacher_url)["max_total_tokens"] - 8
    before = _metrics(teacher_url)
    tokens_before = before["cotd_teacher_generated_tokens_total"]
    u = urllib.parse.urlsplit(teacher_url)

    async def main() -> dict[str, float]:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        body = json.dumps({"inputs": "a", "parameters": {"max_new_tokens": long_new}}).encode()
        head = f"POST /generate HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        m: dict[str, float] = {}

        def decoding() -> bool:
            m.update(_metrics(teacher_url))
            return (
                m["cotd_teacher_requests_inflight"] == 1
                and m["cotd_teacher_generated_tokens_total"] > tokens_before
            )

        await _until(decoding, 120, "the request's row to decode")
        writer.close()  # the client gives up before the answer
        await writer.wait_closed()

        def settled() -> bool:  # released, and its row either dropped or run to its end
            m.update(_metrics(teacher_url))
            return m["cotd_teacher_requests_inflight"] == 0 and (
                m["cotd_teacher_cancelled_rows_total"] > before["cotd_teacher_cancelled_rows_total"]
                or m["cotd_teacher_generated_tokens_total"] >= tokens_before + long_new
            )

        await _until(settled, 120, "the server to release the request")
        async with aiohttp.ClientSession() as s:  # and it goes on serving
            status, answer = await _post(
                s, teacher_url + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}
            )
        assert status == 200 and isinstance(answer["generated_text"], str)
        return _metrics(teacher_url)

    after = asyncio.run(main())
    assert after["cotd_teacher_cancelled_rows_total"] - before["cotd_teacher_cancelled_rows_total"] == 1
    # the row stopped early: fewer tokens than it asked for were chosen (the follow-up made at most 2)
    assert after["cotd_teacher_generated_tokens_total"] - tokens_before < long_new


def test_sigterm_stops_the_server_mid_generation(tiny_teacher: Path) -> None:
    with teacher_server(tiny_teacher) as (url, proc):

        async def main():
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    url + "/generate_stream", json={"inputs": "a", "parameters": {"max_new_tokens": 1000}}
                ) as r:
                    await r.content.readline()
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await r.read()
                    except aiohttp.ClientError:
                        pass

        asyncio.run(main())
        try:
            # decoding stops within a step, then it exits at once (exit_now; ~0.1 s measured):
            # 10 s is room for a loaded machine, not a timing claim
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("teacher serve did not stop within 10 s of SIGTERM")
    assert rc == 0


# ------------------------------------------------------------------------------- unexpected errors
STRICT_TEMPLATE = (  # the checks Llama-2's and Gemma's templates make, with their messages
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
)


def test_template_refusals_are_422_and_failures_are_json_500(tiny_teacher: Path, monkeypatch) -> None:
    """A chat template's refusal is a 422 naming `messages`; any unexpected exception a JSON 500."""
    openai = pytest.importorskip("openai")
    from aiohttp.test_utils import TestServer

    from services.generator import server
    from services.generator.server import ServeConfig, make_app, make_engine

    engine = make_engine(ServeConfig(model=str(tiny_teacher), threads=1, batch_wait_ms=1))
    engine.tokenizer.chat_template = STRICT_TEMPLATE
    encode = engine.encode

    def failing_encode(text: str) -> list[int]:
        if "boom" in text:
            raise RuntimeError("boom")
        return encode(text)

    monkeypatch.setattr(engine, "encode", failing_encode)

    async def main():
        async with TestServer(make_app(engine)) as srv, aiohttp.ClientSession() as s:
            url = str(srv.make_url("")).rstrip("/")
            c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="EMPTY", max_retries=0)
            ok = await c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert ok.choices[0].finish_reason in ("length", "stop")
            refused = []
            for msgs in (
                [{"role": "assistant", "content": "hi"}],  # the order the template refuses
                [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],  # its role
            ):
                with pytest.raises(openai.UnprocessableEntityError) as e:
                    await c.chat.completions.create(model="m", messages=msgs, max_tokens=2)
                refused.append(e.value)
            with pytest.raises(openai.InternalServerError) as e:
                await c.completions.create(model="m", prompt="boom", max_tokens=2)
            oa_500 = e.value
            await c.close()
            plain = []
            for path in ("/generate", "/generate_stream", "/"):
                async with s.post(url + path, json={"inputs": "boom"}) as r:
                    plain.append((r.status, r.content_type, await r.json()))
            monkeypatch.setattr(server, "_event", lambda *a: 1 / 0)  # fails after the stream has started
            async with s.post(url + "/generate_stream", json={"inputs": "a"}) as r:
                streamed = (r.status, await r.text())
            return refused, oa_500, plain, streamed

    refused, oa_500, plain, streamed = asyncio.run(main())
    assert "roles must alternate" in str(refused[0]) and "System role not supported" in str(refused[1])
    assert all("`messages`" in str(e) and e.body["code"] == "validation" for e in refused), refused
    assert "RuntimeError: boom" in str(oa_500) and oa_500.body["code"] == "internal"
    for status, ctype, body in plain:
        assert status == 500 and ctype == "application/json", (status, ctype)
        assert body["error_type"] == "internal" and "RuntimeError: boom" in body["error"]
    status, text = streamed  # the status line was sent: the stream ends with TGI's error event
    assert status == 200 and '"error_type": "internal"' in text and "ZeroDivisionError" in text
