"""`cotd teacher serve`: a small TGI-protocol server over a local transformers model.

Routes (TGI's shapes): ``POST /generate``, ``POST /generate_stream`` (server-sent events),
``POST /`` (a list of one generation), ``POST /v1/chat/completions`` (OpenAI shape, also streamed),
``GET /info`` and ``GET /health``. It is meant for running the pipeline without a GPU server.

Requests that arrive together are batched: the first request opens a window of `batch_wait_ms`,
every request that arrives in it (up to `max_batch`) joins, and requests with the same sampling
settings run as one left-padded ``generate`` in a worker thread. Streams are sent token by token
once their batch has finished (generation is batched, not incremental).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger(__name__)


class GenParams(BaseModel):
    """TGI `parameters` (the subset this server honours; others are accepted and ignored)."""

    model_config = {"extra": "ignore"}

    max_new_tokens: int = Field(20, ge=1)
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool = False


class GenerateRequest(BaseModel):
    """TGI `/generate` body."""

    inputs: str
    parameters: GenParams = Field(default_factory=GenParams)
    stream: bool = False


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    """OpenAI chat completion body (the fields this server honours)."""

    model_config = {"extra": "ignore"}

    model: str | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    stream: bool = False


class ServeConfig(BaseModel):
    """How the server runs."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch: int = Field(16, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch.set_num_threads (None: torch's default).")
    max_input_tokens: int = 2048


@dataclass
class Generation:
    """One finished generation."""

    text: str
    token_ids: list[int]
    token_texts: list[str]
    logprobs: list[float]
    finish_reason: str  # length, eos_token, stop_sequence
    prompt_tokens: int


@dataclass
class _Pending:
    prompt: str
    params: GenParams
    future: asyncio.Future = field(repr=False)


def _sampling_key(p: GenParams) -> tuple:
    sample = p.do_sample or (p.temperature is not None and p.temperature > 0 and p.temperature != 1.0) or p.top_p is not None
    return (bool(sample), p.temperature, p.top_p, p.top_k, p.seed)


class Engine:
    """The model, the tokenizer and the batcher."""

    def __init__(self, cfg: ServeConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model)
        self.model.eval()
        self.model_id = Path(cfg.model).name or cfg.model
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cotd-generate")
        self.batches: list[int] = []  # sizes of the batches run (for tests and logs)
        self._task: asyncio.Task | None = None

    # ---------------------------------------------------------------------------------- batching
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, prompt: str, params: GenParams) -> Generation:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(prompt, params, fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            batch = [first]
            deadline = loop.time() + self.cfg.batch_wait_ms / 1000
            while len(batch) < self.cfg.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            while len(batch) < self.cfg.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            groups: dict[tuple, list[_Pending]] = {}
            for p in batch:
                groups.setdefault(_sampling_key(p.params), []).append(p)
            for group in groups.values():
                live = [p for p in group if not p.future.done()]
                if not live:
                    continue
                self.batches.append(len(live))
                try:
                    outs = await loop.run_in_executor(self.pool, self._generate, live)
                except Exception as exc:  # one failed batch fails its requests, not the server
                    for p in live:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                for p, out in zip(live, outs, strict=True):
                    if not p.future.done():
                        p.future.set_result(out)

    # -------------------------------------------------------------------------------- generation
    def _generate(self, batch: list[_Pending]) -> list[Generation]:
        torch = self.torch
        tok = self.tokenizer
        enc = tok([p.prompt for p in batch], return_tensors="pt", padding=True, add_special_tokens=False,
                  truncation=True, max_length=self.cfg.max_input_tokens)
        p0 = batch[0].params
        sample, temperature, top_p, top_k, seed = _sampling_key(p0)
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            if seed is not None:
                torch.manual_seed(seed)
            kwargs |= {"temperature": temperature or 1.0, "top_p": top_p or 1.0, "top_k": top_k or 0}
        max_new = max(p.params.max_new_tokens for p in batch)
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                output_scores=True,
                return_dict_in_generate=True,
                **kwargs,
            )
        width = enc["input_ids"].shape[1]
        seqs = out.sequences[:, width:]
        logps = torch.stack(out.scores, dim=1).float().log_softmax(-1) if out.scores else None
        results = []
        for i, p in enumerate(batch):
            ids: list[int] = []
            lps: list[float] = []
            reason = "length"
            for j, tid in enumerate(seqs[i].tolist()[: p.params.max_new_tokens]):
                if tid == tok.eos_token_id:
                    reason = "eos_token"
                    break
                ids.append(tid)
                lps.append(float(logps[i, j, tid]) if logps is not None else 0.0)
            texts = [tok.decode([t]) for t in ids]
            text = tok.decode(ids, skip_special_tokens=True)
            for s in p.params.stop:
                k = text.find(s) if s else -1
                if k >= 0:
                    text, reason = text[: k + len(s)], "stop_sequence"
                    keep, acc = 0, ""
                    while keep < len(texts) and len(acc) < len(text):
                        acc += texts[keep]
                        keep += 1
                    ids, texts, lps = ids[:keep], texts[:keep], lps[:keep]
            prompt_len = int(enc["attention_mask"][i].sum())
            results.append(Generation(text, ids, texts, lps, reason, prompt_len))
        return results

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        """The chat template applied to `messages` (a plain transcript without a template)."""
        msgs = [m.model_dump() for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant: "


# -------------------------------------------------------------------------------------- responses
def _tokens(g: Generation) -> list[dict[str, Any]]:
    return [
        {"id": i, "text": t, "logprob": lp, "special": False}
        for i, t, lp in zip(g.token_ids, g.token_texts, g.logprobs, strict=True)
    ]


def _details(g: GenParams, out: Generation) -> dict[str, Any]:
    return {
        "finish_reason": out.finish_reason,
        "generated_tokens": len(out.token_ids),
        "seed": g.seed,
        "prefill": [],
        "tokens": _tokens(out),
        "top_tokens": None,
        "best_of_sequences": None,
    }


def _error(status: int, message: str, error_type: str = "validation") -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


def _validate_gen(body: Any) -> GenerateRequest:
    req = GenerateRequest.model_validate(body)
    t = req.parameters.temperature
    if t is not None and t <= 0:
        raise ValueError("`temperature` must be strictly positive")
    tp = req.parameters.top_p
    if tp is not None and not 0 < tp < 1:
        raise ValueError("`top_p` must be > 0.0 and < 1.0")
    return req


def _chat_params(req: ChatRequest) -> GenParams:
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    sample = req.temperature is not None and req.temperature > 0
    return GenParams(
        max_new_tokens=req.max_completion_tokens or req.max_tokens or 256,
        do_sample=sample,
        temperature=req.temperature if sample else None,
        top_p=req.top_p if sample and req.top_p is not None and req.top_p < 1 else None,
        seed=req.seed,
        stop=stop,
    )


def make_app(engine: Engine) -> web.Application:
    """The aiohttp application over an engine."""

    async def parse(request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("request body is not valid JSON") from None

    async def gen_request(request: web.Request):
        """The validated /generate body and the engine's output, or a 422 response."""
        try:
            req = _validate_gen(await parse(request))
        except (ValueError, ValidationError) as exc:
            return None, _error(422, str(exc).splitlines()[0])
        return req, await engine.submit(req.inputs, req.parameters)

    async def generate(request: web.Request) -> web.Response:
        req, out = await gen_request(request)
        if req is None:
            return out
        text = (req.inputs + out.text) if req.parameters.return_full_text else out.text
        body: dict[str, Any] = {"generated_text": text}
        if req.parameters.details:
            body["details"] = _details(req.parameters, out)
        if request.path == "/":
            return web.json_response([body])
        return web.json_response(body)

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        req, out = await gen_request(request)
        if req is None:
            return out
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        toks = _tokens(out)
        for k, tok in enumerate(toks):
            last = k == len(toks) - 1
            event = {
                "index": k,
                "token": tok,
                "top_tokens": None,
                "generated_text": ((req.inputs if req.parameters.return_full_text else "") + out.text) if last else None,
                "details": {"finish_reason": out.finish_reason, "generated_tokens": len(toks), "seed": req.parameters.seed}
                if last
                else None,
            }
            await resp.write(f"data:{json.dumps(event)}\n\n".encode())
        if not toks:  # nothing generated: one final event with the empty text
            event = {"index": 0, "token": {"id": 0, "text": "", "logprob": 0.0, "special": True}, "top_tokens": None,
                     "generated_text": "", "details": {"finish_reason": out.finish_reason, "generated_tokens": 0, "seed": None}}
            await resp.write(f"data:{json.dumps(event)}\n\n".encode())
        await resp.write_eof()
        return resp

    async def chat(request: web.Request) -> web.StreamResponse:
        try:
            req = ChatRequest.model_validate(await parse(request))
        except (ValueError, ValidationError) as exc:
            return _error(422, str(exc).splitlines()[0])
        params = _chat_params(req)
        out = await engine.submit(engine.chat_prompt(req.messages), params)
        reason = "stop" if out.finish_reason in ("eos_token", "stop_sequence") else "length"
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        model = req.model or engine.model_id
        usage = {"prompt_tokens": out.prompt_tokens, "completion_tokens": len(out.token_ids),
                 "total_tokens": out.prompt_tokens + len(out.token_ids)}
        if not req.stream:
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "cotd-teacher-serve",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                             "logprobs": None, "finish_reason": reason}],
                "usage": usage,
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        pieces = out.token_texts or [out.text]
        for k, piece in enumerate(pieces):
            last = k == len(pieces) - 1
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": "cotd-teacher-serve",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece},
                                  "logprobs": None, "finish_reason": reason if last else None}],
                     "usage": usage if last else None}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def info(_: web.Request) -> web.Response:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("cotd")
        except PackageNotFoundError:
            ver = "0"
        return web.json_response({
            "model_id": engine.model_id,
            "model_sha": None,
            "model_dtype": str(next(engine.model.parameters()).dtype),
            "model_device_type": "cpu",
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": 128,
            "max_best_of": 1,
            "max_stop_sequences": 4,
            "max_input_tokens": engine.cfg.max_input_tokens,
            "max_total_tokens": engine.cfg.max_input_tokens + 2048,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "router": "cotd-teacher-serve",
            "version": ver,
            "sha": None,
            "docker_label": None,
        })

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def on_startup(_: web.Application) -> None:
        engine.start()

    async def on_cleanup(_: web.Application) -> None:
        await engine.stop()

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/generate", generate)
    app.router.add_post("/", generate)
    app.router.add_post("/generate_stream", generate_stream)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/info", info)
    app.router.add_get("/health", health)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def serve(cfg: ServeConfig) -> None:
    """Load the model and serve until interrupted."""
    engine = Engine(cfg)
    log.info("teacher serve: %s on http://%s:%d", cfg.model, cfg.host, cfg.port)
    web.run_app(make_app(engine), host=cfg.host, port=cfg.port, print=None, access_log=None)
