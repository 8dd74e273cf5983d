"""`cotd teacher serve`: a TGI-protocol server over a local transformers model.

Routes (TGI's shapes): ``POST /generate``, ``POST /generate_stream`` and ``POST /`` (with
``"stream": true`` it streams, as TGI's OpenAPI says), ``GET /info`` (the model's real limits),
``GET /health``, ``GET /metrics`` (Prometheus text); OpenAI's ``POST /v1/chat/completions``,
``POST /v1/completions`` and ``GET /v1/models``. Every request is validated on its own
(:mod:`server_protocol`): a bad one gets its own 422 ``{"error", "error_type"}`` and the others go
on; any other failure is a JSON 500 of the same shape (never aiohttp's text/plain page).
Decoding (:mod:`server_engine`) streams tokens as they are chosen, stops a row whose client
disconnected (``handler_cancellation``: also a non-streamed one), and ends within one step on SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any, NoReturn

from aiohttp import web
from pydantic import BaseModel, Field

from services.generator import server_openai as oa
from services.generator.server_engine import Engine, Generation, Job, Token
from services.generator.server_protocol import (
    GenerateRequest,
    RequestError,
    fit_prompt,
    invalid,
    new_tokens,
    parse_generate,
    sampling_of,
)

log = logging.getLogger(__name__)
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class ServeConfig(BaseModel):
    """How the server runs."""

    model: str = Field(description="Local model folder (or hub id) of a causal LM, loaded with Auto classes.")
    host: str = Field("127.0.0.1", description="Bind address (loopback unless configured otherwise).")
    port: int = Field(8080, description="TCP port.")
    max_batch: int = Field(16, ge=1, description="Requests prefilled together in one batch.")
    batch_wait_ms: float = Field(5.0, ge=0, description="How long an idle server waits for a batch to fill.")
    threads: int | None = Field(None, ge=1, description="torch.set_num_threads (None: torch's default).")
    max_input_tokens: int | None = Field(None, ge=1, description="Prompt limit (default: max total - 1).")
    max_total_tokens: int | None = Field(
        None, ge=2, description="Prompt + new tokens (default: the model's positions)."
    )
    max_concurrent_requests: int = Field(128, ge=1, description="Requests in flight before 429 (TGI's).")
    shutdown_timeout_s: float = Field(3.0, ge=0, description="Grace for open connections on SIGTERM.")


def make_engine(cfg: ServeConfig) -> Engine:
    """The engine a config describes (loads the model)."""
    return Engine(
        cfg.model,
        max_batch=cfg.max_batch,
        batch_wait_ms=cfg.batch_wait_ms,
        threads=cfg.threads,
        max_input_tokens=cfg.max_input_tokens,
        max_total_tokens=cfg.max_total_tokens,
        max_concurrent_requests=cfg.max_concurrent_requests,
    )


class Run:
    """One job in flight: submitted on enter, released (and its row stopped) on exit, also on disconnect."""

    def __init__(self, engine: Engine, job: Job) -> None:
        self.engine, self.job = engine, job
        self.result: Generation | None = None

    async def __aenter__(self) -> Run:
        self.engine.submit(self.job)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.engine.release(self.job)

    async def tokens(self) -> AsyncIterator[Token]:
        """Tokens as they are chosen; :attr:`result` is set after the last."""
        while True:
            kind, value = await self.job.events.get()
            if kind == "error":
                raise value
            if kind == "done":
                self.result = value
                return
            yield value

    async def finish(self) -> Generation:
        """The whole generation."""
        async for _ in self.tokens():
            pass
        assert self.result is not None
        return self.result


def error_response(exc: RequestError, openai: bool = False) -> web.Response:
    """TGI's error body ``{"error", "error_type"}``; on OpenAI routes `error` is OpenAI's object.

    The ``openai`` package reads ``error.message`` (a plain string there leaves its exception with
    only "Error code: 422"); TGI-aware clients still find `error_type`.
    """
    if not openai:
        return web.json_response({"error": str(exc), "error_type": exc.error_type}, status=exc.status)
    kind = "invalid_request_error" if exc.status == 422 else exc.error_type
    err = {"message": str(exc), "type": kind, "param": None, "code": exc.error_type}
    return web.json_response({"error": err, "error_type": exc.error_type}, status=exc.status)


def internal_error(exc: Exception, request: web.Request) -> RequestError:
    """An unexpected failure as a 500 `internal` error (logged with its traceback)."""
    if isinstance(exc, RequestError):
        return exc
    log.error("%s %s failed", request.method, request.path, exc_info=exc)
    return RequestError(f"internal error: {type(exc).__name__}: {exc}", status=500, error_type="internal")


async def end_stream(
    request: web.Request, resp: web.StreamResponse, exc: Exception, space: bool = False
) -> web.StreamResponse:
    """End a started stream with an error event: its status line is sent, so no status can change."""
    err = internal_error(exc, request)
    try:
        await resp.write(_sse({"error": str(err), "error_type": err.error_type}, space=space))
    except ConnectionError:  # the client is gone too
        pass
    return resp


async def read_json(request: web.Request) -> Any:
    """The body as JSON, or a 422."""
    try:
        return json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("request body is not valid JSON") from None


def tgi_job(engine: Engine, req: GenerateRequest) -> Job:
    """A validated `/generate` request as a job (tokenized, limits checked)."""
    p = req.parameters
    s = sampling_of(p)
    ids = fit_prompt(engine.encode(req.inputs), p.truncate, engine.limits)
    max_new = new_tokens(p.max_new_tokens, len(ids), engine.limits)
    return Job(
        ids, max_new, s, stop=p.stop, top_n=p.top_n_tokens or 0, prefill_details=p.decoder_input_details
    )


def tgi_details(req: GenerateRequest, out: Generation) -> dict[str, Any]:
    """TGI's ``details`` of a finished generation."""
    p = req.parameters
    return {
        "finish_reason": out.finish_reason,
        "generated_tokens": len(out.tokens),
        "seed": out.seed,
        "prefill": [{"id": t.id, "text": t.text, "logprob": t.logprob} for t in out.prefill],
        "tokens": [t.tgi() for t in out.tokens],
        "top_tokens": [[a.tgi() for a in t.top] for t in out.tokens] if p.top_n_tokens else None,
        "best_of_sequences": None,
    }


def _sse(obj: Any, space: bool = False) -> bytes:
    return f"data:{' ' if space else ''}{json.dumps(obj)}\n\n".encode()


def make_app(engine: Engine) -> web.Application:
    """The aiohttp application over an engine."""
    limits = engine.limits

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        """Refusals as their own 4xx/5xx JSON; anything unexpected as a JSON 500 (aiohttp's 404/405 pass)."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            return error_response(internal_error(exc, request), openai=request.path.startswith("/v1/"))

    async def generate(request: web.Request) -> web.StreamResponse:
        req = parse_generate(await read_json(request), limits)
        if request.path == "/" and req.stream:
            return await stream_tgi(request, req)
        async with Run(engine, tgi_job(engine, req)) as run:
            out = await run.finish()
        body: dict[str, Any] = {
            "generated_text": (req.inputs if req.parameters.return_full_text else "") + out.text
        }
        if req.parameters.details or req.parameters.decoder_input_details:
            body["details"] = tgi_details(req, out)
        return web.json_response([body] if request.path == "/" else body)

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        return await stream_tgi(request, parse_generate(await read_json(request), limits))

    async def stream_tgi(request: web.Request, req: GenerateRequest) -> web.StreamResponse:
        if req.parameters.decoder_input_details:
            raise invalid("`decoder_input_details` == true is not supported when streaming tokens")
        job = tgi_job(engine, req)
        async with Run(engine, job) as run:
            resp = web.StreamResponse(headers=SSE_HEADERS)
            await resp.prepare(request)
            pending: Token | None = None
            k = 0
            try:
                async for tok in run.tokens():
                    if pending is not None:
                        await resp.write(_sse(_event(k, pending, None, None)))
                        k += 1
                    pending = tok
            except ConnectionError:
                raise
            except Exception as exc:
                return await end_stream(request, resp, exc)
            out = run.result
            text = (req.inputs if req.parameters.return_full_text else "") + out.text
            details = {
                "finish_reason": out.finish_reason,
                "generated_tokens": len(out.tokens),
                "seed": out.seed,
                "input_length": out.prompt_tokens,
            }
            await resp.write(_sse(_event(k, pending, text, details)))
            await resp.write_eof()
            return resp

    async def chat(request: web.Request) -> web.StreamResponse:
        req = oa.parse(oa.ChatRequest, await read_json(request))
        s = oa.sampling(req)
        stop = oa.stops(req, limits)
        prompt = engine.chat_prompt(oa.chat_messages(req))
        ids, max_new = oa.fit(
            engine.encode(prompt),
            req.max_completion_tokens or req.max_tokens,
            req.truncate,
            limits,
            "max_completion_tokens" if req.max_completion_tokens else "max_tokens",
            "messages",
        )
        jobs = [_job_n(ids, max_new, s, stop, req.top_logprobs or 0, k) for k in range(req.n)]
        cid, created = oa.new_id("chatcmpl")
        model = req.model or engine.model_id
        if req.stream:
            return await stream_openai(request, jobs, cid, created, model, req, chat=True)
        outs = await run_all(jobs)
        choices = [
            {
                "index": k,
                "message": {"role": "assistant", "content": o.text},
                "logprobs": oa.chat_logprobs(_visible(o), req.top_logprobs) if req.logprobs else None,
                "finish_reason": oa.finish(o.finish_reason),
            }
            for k, o in enumerate(outs)
        ]
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "cotd-teacher-serve",
                "choices": choices,
                "usage": _usage(len(ids), outs),
            }
        )

    async def completions(request: web.Request) -> web.StreamResponse:
        req = oa.parse(oa.CompletionRequest, await read_json(request))
        s = oa.sampling(req)
        stop = oa.stops(req, limits)
        prompts = oa.completion_prompts(req)
        if req.stream and (len(prompts) > 1 or req.echo):
            raise invalid("`stream` supports one prompt without `echo`")
        jobs, lengths = [], []
        for p in prompts:
            ids, max_new = oa.fit(
                engine.encode(p), req.max_tokens, req.truncate, limits, "max_tokens", "prompt"
            )
            lengths.append(len(ids))
            jobs += [_job_n(ids, max_new, s, stop, req.logprobs or 0, k) for k in range(req.n)]
        cid, created = oa.new_id("cmpl")
        model = req.model or engine.model_id
        if req.stream:
            return await stream_openai(request, jobs, cid, created, model, req, chat=False)
        outs = await run_all(jobs)
        choices = []
        for k, o in enumerate(outs):
            prefix = prompts[k // req.n] if req.echo else ""
            choices.append(
                {
                    "index": k,
                    "text": prefix + o.text,
                    "finish_reason": oa.finish(o.finish_reason),
                    "logprobs": oa.completion_logprobs(_visible(o), len(prefix))
                    if req.logprobs is not None
                    else None,
                }
            )
        usage = {"prompt_tokens": sum(lengths), "completion_tokens": sum(len(o.tokens) for o in outs)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response(
            {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "cotd-teacher-serve",
                "choices": choices,
                "usage": usage,
            }
        )

    async def run_all(jobs: list[Job]) -> list[Generation]:
        async with AsyncExitStack() as stack:
            runs = [await stack.enter_async_context(Run(engine, j)) for j in jobs]
            return [await r.finish() for r in runs]

    async def stream_openai(
        request: web.Request, jobs: list[Job], cid: str, created: int, model: str, req: Any, chat: bool
    ) -> web.StreamResponse:
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
            return _sse(
                {
                    "id": cid,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "system_fingerprint": "cotd-teacher-serve",
                    "choices": choices,
                    "usage": usage,
                },
                space=True,
            )

        async with AsyncExitStack() as stack:
            runs = [await stack.enter_async_context(Run(engine, j)) for j in jobs]
            resp = web.StreamResponse(headers=SSE_HEADERS)
            await resp.prepare(request)
            try:
                for k, run in enumerate(runs):  # choices one after the other (each already decoding)
                    if chat:
                        await resp.write(
                            chunk(
                                [
                                    {
                                        "index": k,
                                        "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ]
                            )
                        )
                    async for tok in run.tokens():
                        if tok.id in engine.eos_ids:
                            continue
                        lp = (
                            (
                                oa.chat_logprobs([tok], req.top_logprobs)
                                if chat
                                else oa.completion_logprobs([tok], 0)
                            )
                            if req.logprobs not in (None, False)
                            else None
                        )
                        part = {"delta": {"content": tok.text}} if chat else {"text": tok.text}
                        await resp.write(chunk([{"index": k, **part, "logprobs": lp, "finish_reason": None}]))
                    end = {"delta": {}} if chat else {"text": ""}
                    await resp.write(
                        chunk(
                            [
                                {
                                    "index": k,
                                    **end,
                                    "logprobs": None,
                                    "finish_reason": oa.finish(run.result.finish_reason),
                                }
                            ]
                        )
                    )
            except ConnectionError:
                raise
            except Exception as exc:
                return await end_stream(request, resp, exc, space=True)
            if req.stream_options and req.stream_options.include_usage:
                await resp.write(chunk([], _usage(len(jobs[0].ids), [r.result for r in runs])))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp

    started = int(time.time())

    async def models(_: web.Request) -> web.Response:
        return web.json_response(oa.models_list(engine.model_id, started))

    async def info(_: web.Request) -> web.Response:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("cotd")
        except PackageNotFoundError:
            ver = "0"
        return web.json_response(
            {
                "model_id": engine.model_id,
                "model_sha": None,
                "model_dtype": str(next(engine.model.parameters()).dtype),
                "model_device_type": "cpu",
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": engine.max_concurrent_requests,
                "max_best_of": limits.max_best_of,
                "max_stop_sequences": limits.max_stop_sequences,
                "max_input_tokens": limits.max_input_tokens,
                "max_total_tokens": limits.max_total_tokens,
                "max_top_n_tokens": limits.max_top_n_tokens,
                "max_position_embeddings": getattr(engine.model.config, "max_position_embeddings", None),
                "max_batch_size": engine.max_batch,
                "validation_workers": 1,
                "max_client_batch_size": 1,
                "router": "cotd-teacher-serve",
                "version": ver,
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def metrics(_: web.Request) -> web.Response:
        """The engine's counters in Prometheus' text format (TGI serves /metrics too)."""
        series = (
            ("requests_inflight", "gauge", "Requests submitted and not yet answered.", engine.inflight),
            (
                "cancelled_rows_total",
                "counter",
                "Rows dropped because their client left.",
                engine.cancelled_rows,
            ),
            ("generated_tokens_total", "counter", "Tokens chosen, all rows.", engine.generated_tokens),
            ("batches_total", "counter", "Batches prefilled.", engine.batches_total),
        )
        lines = []
        for name, kind, doc, value in series:
            lines += [f"# HELP cotd_teacher_{name} {doc}", f"# TYPE cotd_teacher_{name} {kind}"]
            lines.append(f"cotd_teacher_{name} {value}")
        return web.Response(
            body=("\n".join(lines) + "\n").encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def on_startup(_: web.Application) -> None:
        engine.start()

    async def on_shutdown(_: web.Application) -> None:
        engine.stop()

    app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[errors])
    app.router.add_post("/generate", generate)
    app.router.add_post("/", generate)
    app.router.add_post("/generate_stream", generate_stream)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/info", info)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


def _event(k: int, tok: Token, text: str | None, details: dict[str, Any] | None) -> dict[str, Any]:
    """One TGI stream event (the last carries the text and details)."""
    return {
        "index": k,
        "token": tok.tgi(),
        "top_tokens": [a.tgi() for a in tok.top],
        "generated_text": text,
        "details": details,
    }


def _job_n(ids: list[int], max_new: int, s: Any, stop: list[str], top_n: int, k: int) -> Job:
    """Choice `k` of n: its own seed (seed + k) so sampled choices differ."""
    seed = s.seed + k if s.seed is not None else None
    return Job(list(ids), max_new, replace(s, seed=seed), stop=stop, top_n=top_n)


def _visible(out: Generation) -> list[Token]:
    """The generated tokens without the final EOS (OpenAI shows none)."""
    return [
        t for t in out.tokens if not (t.special and out.finish_reason == "eos_token" and t is out.tokens[-1])
    ]


def _usage(prompt_tokens: int, outs: list[Generation]) -> dict[str, int]:
    completion = sum(len(o.tokens) for o in outs)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def serve(cfg: ServeConfig) -> None:
    """Load the model and serve until SIGINT/SIGTERM (which stop decoding within one step)."""
    engine = make_engine(cfg)
    log.info(
        "teacher serve: %s on http://%s:%d (max input %d, max total %d tokens)",
        cfg.model,
        cfg.host,
        cfg.port,
        engine.limits.max_input_tokens,
        engine.limits.max_total_tokens,
    )
    web.run_app(
        make_app(engine),
        host=cfg.host,
        port=cfg.port,
        print=None,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=cfg.shutdown_timeout_s,
    )
    log.info("teacher serve: stopped")


def exit_now(code: int = 0) -> NoReturn:
    """Leave the process at once, logs and std streams flushed (for `cotd teacher serve` after `serve`).

    The server has stopped by then; the interpreter's own teardown of torch and the model would take
    seconds more (8.5 s measured on a loaded 2-core machine), so SIGTERM would not end it promptly.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken: nothing left to save
            pass
    os._exit(code)
