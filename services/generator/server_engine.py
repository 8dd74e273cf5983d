"""The decoding engine of `cotd teacher serve`: a transformers causal LM stepped token by token.

One daemon thread runs the model. Requests that arrive together (within `batch_wait_ms`, up to
`max_batch`) are prefilled as one left-padded batch with its own KV cache; every active batch
then takes one decoding step in turn, so a later batch does not wait for an earlier one to end.
Each row has its own sampling settings and seed, and leaves its batch as soon as it finishes (EOS,
its own `max_new_tokens`, a stop sequence) or its client goes away (:attr:`Job.cancelled`), so a
short request never waits for a long one. Tokens are handed to the request's asyncio queue as they
are chosen (true streaming). :meth:`Engine.stop` ends the thread within one step.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.generator.server_protocol import Limits, RequestError, Sampling, invalid

log = logging.getLogger(__name__)


@dataclass
class Token:
    """One token with its logprob (None for a prompt's first token) and, when asked, its alternatives."""

    id: int
    text: str
    logprob: float | None
    special: bool = False
    top: list[Token] = field(default_factory=list)

    def tgi(self) -> dict[str, Any]:
        """TGI's ``Token`` object."""
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


@dataclass
class Generation:
    """One finished generation."""

    text: str
    tokens: list[Token]
    finish_reason: str  # length, eos_token, stop_sequence
    prompt_tokens: int
    prefill: list[Token]
    seed: int | None


@dataclass
class Job:
    """One request's work: its prompt ids, limits and sampling, and the queue its events go to."""

    ids: list[int]
    max_new_tokens: int
    sampling: Sampling
    stop: list[str] = field(default_factory=list)
    top_n: int = 0
    prefill_details: bool = False
    events: asyncio.Queue = field(default_factory=asyncio.Queue, repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    cancelled: bool = False

    def post(self, kind: str, value: Any) -> None:
        """Hand an event (``token``, ``done``, ``error``) to the request's event loop."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Engine:
    """The model, the tokenizer, the limits and the decoding thread."""

    def __init__(
        self,
        model: str,
        *,
        max_batch: int = 16,
        batch_wait_ms: float = 5.0,
        threads: int | None = None,
        max_input_tokens: int | None = None,
        max_total_tokens: int | None = None,
        max_concurrent_requests: int = 128,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model)
        self.model.eval()
        self.model_id = Path(model).name or model
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000
        self.max_concurrent_requests = max_concurrent_requests
        self.limits = model_limits(self.model.config, max_input_tokens, max_total_tokens)
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        params = inspect.signature(self.model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.pad_id = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else min(eos_ids, default=0)
        )
        self.inflight = 0
        self.batches: deque[int] = deque(maxlen=256)  # sizes of the last batches prefilled (tests, logs)
        self.cancelled_rows = 0  # rows stopped because their request ended first (client gone)
        self.generated_tokens = 0  # tokens chosen since start (all rows)
        self.batches_total = 0  # batches prefilled since start
        self._inbox: queue.Queue[Job] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- requests
    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt (the client applied any template; no special tokens added)."""
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The model's chat template over `messages` (a plain transcript when it has none).

        A template that refuses the messages (``raise_exception``: roles out of order, a role it
        does not know) gives a 422 naming `messages`, not a 500.
        """
        if getattr(self.tokenizer, "chat_template", None):
            from jinja2 import TemplateError  # transformers' templates are jinja2 (torch requires it)

            try:
                return self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            except TemplateError as exc:
                raise invalid(f"`messages`: the model's chat template refused them: {exc}") from None
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def submit(self, job: Job) -> Job:
        """Queue `job` (from the event loop); refused with 429 when too many are in flight, 503 when stopping."""
        if self._stopping.is_set():
            raise RequestError("the server is shutting down", status=503, error_type="unhealthy")
        if self.inflight >= self.max_concurrent_requests:
            raise RequestError("Model is overloaded", status=429, error_type="overloaded")
        job.loop = asyncio.get_running_loop()
        self.inflight += 1
        self._inbox.put(job)
        return job

    def release(self, job: Job) -> None:
        """The request is over (answered, failed, or its client left): stop its row if it still runs."""
        job.cancelled = True
        self.inflight -= 1

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the decoding thread."""
        self._thread = threading.Thread(target=self._run, name="cotd-decode", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop decoding within one step; every unfinished request gets a 503."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        active: list[_Batch] = []
        while not self._stopping.is_set():
            jobs = self._take(block=not active)
            if jobs:
                self.batches.append(len(jobs))
                self.batches_total += 1
                active.append(_Batch(self, jobs))
            for batch in list(active):
                batch.step()
                if batch.finished:
                    active.remove(batch)
        for job in [j for b in active for j in b.jobs] + self._drain():
            job.post("error", RequestError("the server is shutting down", status=503, error_type="unhealthy"))

    def _take(self, block: bool) -> list[Job]:
        """The next batch of live jobs: when idle, waits for a first one, then `batch_wait` for company."""
        try:
            first = self._inbox.get(timeout=0.1) if block else self._inbox.get_nowait()
        except queue.Empty:
            return []
        jobs = [first]
        deadline = time.monotonic() + (self.batch_wait_s if block else 0.0)
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        live = [j for j in jobs if not j.cancelled]
        self._count_cancelled(len(jobs) - len(live))
        return live

    def _count_cancelled(self, n: int) -> None:
        """`n` rows (or queued jobs) dropped because their request ended first."""
        if n:
            self.cancelled_rows += n
            log.info("dropped %d row(s) whose request ended first (client gone)", n)

    def _drain(self) -> list[Job]:
        out = []
        while True:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                return out


def model_limits(config: Any, max_input_tokens: int | None, max_total_tokens: int | None) -> Limits:
    """TGI-style limits from the model's positions: total <= positions, input < total."""
    positions = (
        getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
    )
    total = max_total_tokens or positions
    if total > positions:
        raise ValueError(
            f"--max-total-tokens {total} exceeds the model's max_position_embeddings ({positions})"
        )
    inp = max_input_tokens or total - 1
    if not 0 < inp < total:
        raise ValueError(f"--max-input-tokens {inp} must be > 0 and < max total tokens ({total})")
    return Limits(max_input_tokens=inp, max_total_tokens=total)


class _Batch:
    """Rows prefilled together, sharing one KV cache; finished rows are dropped from it."""

    def __init__(self, engine: Engine, jobs: list[Job]) -> None:
        torch = engine.torch
        self.engine = engine
        self.jobs = jobs
        self.out: list[list[Token]] = [[] for _ in jobs]
        self.seen: list[list[int]] = [list(j.ids) for j in jobs]
        self.gens = [self._generator(j.sampling.seed) for j in jobs]
        width = max(len(j.ids) for j in jobs)
        ids = torch.full((len(jobs), width), engine.pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for i, j in enumerate(jobs):
            ids[i, width - len(j.ids) :] = torch.tensor(j.ids)
            mask[i, width - len(j.ids) :] = 1
        self.mask = mask
        self.past = None
        self.finished = False
        try:
            logits = self._forward(ids)
            self.prefill = [self._prefill(i, logits) if j.prefill_details else [] for i, j in enumerate(jobs)]
            self._choose(logits[:, -1])
        except Exception as exc:  # a failed batch fails its own requests, never the server
            self._fail(exc)

    def _generator(self, seed: int | None):
        if seed is None:
            return None
        g = self.engine.torch.Generator()
        g.manual_seed(seed)
        return g

    def _forward(self, ids):
        torch = self.engine.torch
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        kw = self.engine.cache_kw  # `cache` in recent transformers, `past_key_values` before
        with torch.no_grad():
            out = self.engine.model(
                input_ids=ids, attention_mask=self.mask, position_ids=pos, use_cache=True, **{kw: self.past}
            )
        self.past = getattr(out, kw)
        return out.logits.float()

    def _prefill(self, i: int, logits) -> list[Token]:
        tok, job = self.engine.tokenizer, self.jobs[i]
        n, width = len(job.ids), logits.shape[1]
        logp = logits[i, width - n : width - 1].log_softmax(-1)
        out = [Token(job.ids[0], tok.decode([job.ids[0]]), None, job.ids[0] in self.engine.special_ids)]
        for k, tid in enumerate(job.ids[1:]):
            out.append(Token(tid, tok.decode([tid]), float(logp[k, tid]), tid in self.engine.special_ids))
        return out

    def step(self) -> None:
        """One decoding step for every live row (drops rows whose client has gone first)."""
        if self.finished:
            return
        live = [i for i, j in enumerate(self.jobs) if not j.cancelled]
        self.engine._count_cancelled(len(self.jobs) - len(live))
        self._keep(live)
        if self.finished:
            return
        torch = self.engine.torch
        last = torch.tensor([[self.out[i][-1].id] for i in range(len(self.jobs))])
        self.mask = torch.cat([self.mask, torch.ones((len(self.jobs), 1), dtype=torch.long)], dim=1)
        try:
            self._choose(self._forward(last)[:, -1])
        except Exception as exc:
            self._fail(exc)

    def _choose(self, logits) -> None:
        torch, eng = self.engine.torch, self.engine
        keep = []
        for i, job in enumerate(self.jobs):
            row = _penalize(logits[i], self.seen[i], len(self.out[i]), job.sampling, torch)
            logp = row.log_softmax(-1)
            tid = _pick(row, job.sampling, self.gens[i], torch)
            top = []
            if job.top_n:
                vals, idx = logp.topk(job.top_n)
                top = [
                    Token(int(t), eng.tokenizer.decode([int(t)]), float(v), int(t) in eng.special_ids)
                    for v, t in zip(vals.tolist(), idx.tolist(), strict=True)
                ]
            token = Token(tid, eng.tokenizer.decode([tid]), float(logp[tid]), tid in eng.special_ids, top)
            self.out[i].append(token)
            self.seen[i].append(tid)
            eng.generated_tokens += 1
            reason = self._finish_reason(i)
            job.post("token", token)
            if reason is None:
                keep.append(i)
            else:
                job.post("done", self._result(i, reason))
        self._keep(keep)

    def _finish_reason(self, i: int) -> str | None:
        job, toks = self.jobs[i], self.out[i]
        if toks[-1].id in self.engine.eos_ids:
            return "eos_token"
        if job.stop:
            text = self._text(i)
            if any(s and s in text for s in job.stop):
                return "stop_sequence"
        if len(toks) >= job.max_new_tokens:
            return "length"
        return None

    def _text(self, i: int) -> str:
        ids = [t.id for t in self.out[i] if t.id not in self.engine.eos_ids]
        return self.engine.tokenizer.decode(ids, skip_special_tokens=True)

    def _result(self, i: int, reason: str) -> Generation:
        job = self.jobs[i]
        text = self._text(i)
        if reason == "stop_sequence":  # cut after the first stop sequence (TGI keeps it in the text)
            cut = min(text.find(s) + len(s) for s in job.stop if s and s in text)
            text = text[:cut]
        prefill = self.prefill[i] if hasattr(self, "prefill") else []
        return Generation(text, self.out[i], reason, len(job.ids), prefill, job.sampling.seed)

    def _keep(self, rows: list[int]) -> None:
        """Only `rows` go on (the cache drops the others)."""
        if len(rows) == len(self.jobs):
            return
        if not rows:
            self.finished = True
            self.jobs, self.out, self.seen, self.gens = [], [], [], []
            return
        idx = self.engine.torch.tensor(rows)
        self.past.batch_select_indices(idx)
        self.mask = self.mask[idx]
        self.jobs = [self.jobs[i] for i in rows]
        self.out = [self.out[i] for i in rows]
        self.seen = [self.seen[i] for i in rows]
        self.gens = [self.gens[i] for i in rows]
        if hasattr(self, "prefill"):
            self.prefill = [self.prefill[i] for i in rows]

    def _fail(self, exc: Exception) -> None:
        log.exception("generation failed for a batch of %d", len(self.jobs))
        for job in self.jobs:
            job.post(
                "error", RequestError(f"generation failed: {type(exc).__name__}: {exc}", 500, "generation")
            )
        self._keep([])


def _penalize(row, seen: list[int], n_generated: int, s: Sampling, torch):
    """The repetition (CTRL) penalty over every token seen (prompt too, as transformers and vLLM
    do), the frequency penalty over the last `n_generated` of them, the reply (OpenAI's definition)."""
    if s.repetition_penalty == 1.0 and s.frequency_penalty == 0.0:
        return row
    row = row.clone()
    ids = torch.tensor(seen)
    if s.repetition_penalty != 1.0:
        uniq = ids.unique()
        vals = row[uniq]
        row[uniq] = torch.where(vals > 0, vals / s.repetition_penalty, vals * s.repetition_penalty)
    if s.frequency_penalty:
        gen = ids[len(seen) - n_generated :]
        counts = torch.bincount(gen, minlength=row.shape[0]).to(row.dtype)
        row = row - s.frequency_penalty * counts
    return row


def _pick(row, s: Sampling, gen, torch) -> int:
    """Greedy, or a sample after temperature, top-k and top-p."""
    if not s.do_sample:
        return int(row.argmax())
    logits = row / s.temperature
    if s.top_k:
        kth = logits.topk(min(s.top_k, logits.shape[0])).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > s.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=gen))
