"""The aiohttp transport under `AsyncInferenceClient`: replies, errors, timeouts, streams, gzip."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket

import httpx2
from aiohttp import web
from huggingface_hub.errors import InferenceTimeoutError

from services.generator.teachers.remote import inference_client
from services.generator.teachers.retry import classify
from services.generator.teachers.transport import AiohttpTransport
from shared.specs import TeacherSpec

CHAT = {
    "id": "c", "object": "chat.completion", "created": 0, "model": "m", "system_fingerprint": "x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is 7"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _chat(request: web.Request) -> web.Response:
    body = await request.json()
    mode = body["messages"][-1]["content"]
    if mode == "overloaded":
        return web.json_response({"error": "Model is overloaded", "error_type": "overloaded"}, status=503)
    if mode == "stall":
        await asyncio.sleep(2)
    if mode == "gzip":
        raw = gzip.compress(json.dumps(CHAT).encode())
        return web.Response(body=raw, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    return web.json_response({**CHAT, "model": body["model"]})


async def _stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    words = ["The", " answer", " is", " 7"]
    for i, w in enumerate(words):
        last = i == len(words) - 1
        event = {"index": i + 1, "token": {"id": i, "text": w, "logprob": -0.1, "special": False},
                 "generated_text": "".join(words) if last else None, "details": None, "top_tokens": None}
        await resp.write(f"data:{json.dumps(event)}\n\n".encode())
        await asyncio.sleep(0.01)
    await resp.write_eof()
    return resp


async def _with_server(fn, chat=_chat):
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/generate_stream", _stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return await fn(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def _teacher(**kw) -> TeacherSpec:
    return TeacherSpec(name="t", kind="openai", model="m", base_url="http://unused/v1", **kw)


def _transport(client) -> AiohttpTransport:
    transport = client._async_client._transport
    assert isinstance(transport, AiohttpTransport), "the hub no longer uses the client we hand it"
    return transport


def test_chat_goes_through_the_aiohttp_transport() -> None:
    async def run(root: str):
        client = inference_client(_teacher(), base_url=f"{root}/v1", api_key="k")
        outs = [await client.chat_completion([{"role": "user", "content": "q"}], model="m-name") for _ in range(3)]
        gz = await client.chat_completion([{"role": "user", "content": "gzip"}], model="m")
        sent = _transport(client).requests
        await client.close()
        return outs, gz, sent

    outs, gz, sent = asyncio.run(_with_server(run))
    assert [o.choices[0].message.content for o in outs] == ["The answer is 7"] * 3
    assert outs[0].model == "m-name" and outs[0].usage.completion_tokens == 4
    assert gz.choices[0].message.content == "The answer is 7"  # decompressed once, not twice
    assert sent == 4


async def _raised(url: str, content: str, teacher: TeacherSpec) -> BaseException:
    """The exception one chat request raises."""
    client = inference_client(teacher, base_url=url, api_key="k")
    try:
        await client.chat_completion([{"role": "user", "content": content}], model="m")
    except Exception as exc:
        return exc
    finally:
        await client.close()
    raise AssertionError(f"{content!r}: the request did not fail")


def test_overload_answer_is_classified_from_the_hub_error() -> None:
    exc = asyncio.run(_with_server(lambda root: _raised(f"{root}/v1", "overloaded", _teacher())))
    f = classify(exc)
    assert f.overloaded and f.http_code == 503 and f.retryable


def test_timeout_becomes_inference_timeout() -> None:
    exc = asyncio.run(_with_server(lambda root: _raised(f"{root}/v1", "stall", _teacher(timeout_s=0.3))))
    assert isinstance(exc, InferenceTimeoutError)
    f = classify(exc)
    assert f.status == "timeout" and f.retryable


def test_refused_connection_is_a_retryable_transport_error() -> None:
    exc = asyncio.run(_raised(f"http://127.0.0.1:{_free_port()}/v1", "q", _teacher()))
    assert isinstance(exc, httpx2.ConnectError)
    f = classify(exc)
    assert f.status == "error" and f.retryable and "ConnectError" in f.message


def test_streamed_tokens_arrive_one_by_one() -> None:
    async def run(root: str):
        client = inference_client(_teacher(), model=f"{root}/generate_stream", token="k")
        tokens = [t async for t in await client.text_generation("q", stream=True, max_new_tokens=4)]
        await client.close()
        return tokens

    assert asyncio.run(_with_server(run)) == ["The", " answer", " is", " 7"]


def test_closing_the_inference_client_closes_the_session() -> None:
    async def run(root: str):
        client = inference_client(_teacher(), base_url=f"{root}/v1", api_key="k")
        await client.chat_completion([{"role": "user", "content": "q"}], model="m")
        transport = _transport(client)
        session = transport._session
        await client.close()
        return session

    session = asyncio.run(_with_server(run))
    assert session is not None and session.closed


def test_frequency_penalty_reaches_the_server_only_when_set() -> None:
    """A teacher's `frequency_penalty` is sent on the chat route; unset, the field stays out of the body."""
    from services.generator.teachers.remote import ChatClient

    bodies: list[dict] = []

    async def capture(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.json_response(CHAT)

    async def go(url: str) -> None:
        for penalty in (0.4, None):
            client = ChatClient(_teacher(frequency_penalty=penalty), f"{url}/v1")
            reply = await client.complete([{"role": "user", "content": "3 + 4?"}])
            await client.close()
            assert reply.text == "The answer is 7"

    asyncio.run(_with_server(go, chat=capture))
    assert bodies[0]["frequency_penalty"] == 0.4
    assert bodies[1].get("frequency_penalty") is None
    assert "frequency_penalty" in _teacher(frequency_penalty=0.4).identity(3, "cot")
    assert "frequency_penalty" not in _teacher().identity(3, "cot")  # the keys of existing sets stay
