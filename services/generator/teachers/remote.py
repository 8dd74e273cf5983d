"""Teachers behind a server: TGI (`/generate` or `/v1/chat/completions`) and OpenAI-compatible APIs.

Every call goes through `huggingface_hub.AsyncInferenceClient`:

- ``tgi`` + ``route: generate``: the teacher tokenizer's chat template is applied here and the text
  is sent to TGI ``/generate`` (``text_generation``); the client URL is the server root plus
  ``/generate`` (a bare root would post to ``/``).
- ``tgi`` + ``route: chat`` and ``openai``: ``chat_completion`` on ``<base_url>/v1/chat/completions``
  (openai: ``<base_url>/chat/completions``, base_url ending in ``/v1``), with the API key read from
  the environment variable named by ``api_key_env``. Without one, a placeholder key is sent so the
  client never forwards the local Hugging Face login to a third-party URL.

Requests are bounded by an adaptive limit (`AdaptiveLimiter`, AIMD on 429/503), retried with
exponential backoff and jitter (`RetryPolicy`), and time out after ``timeout_s`` (`Deadlines`: one
watchdog task instead of a loop timer per request). An item that still
fails is recorded with `error` set, never dropped. Finished items are appended to a journal under
`workdir` as they arrive (one flushed JSON line each); a restarted generation reads it and asks only
for the items not finished yet (failed ones are asked again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from services.generator.prompts import build_messages
from services.generator.teachers.concurrency import AdaptiveLimiter
from services.generator.teachers.deadlines import Deadlines, tick_for
from services.generator.teachers.retry import Failure, RetryPolicy, classify
from shared.cotset import CotRecord
from shared.datasets.base import Question
from shared.errors import CotdError
from shared.metrics import observe_teacher_request
from shared.policy import check_api_key_env
from shared.settings import get_settings
from shared.specs import CotSetSpec, TeacherSpec

log = logging.getLogger(__name__)

NO_KEY = "EMPTY"  # sent when no api_key_env is configured (see module docstring)


class TeacherError(CotdError, RuntimeError):
    """A teacher is misconfigured or unreachable as a whole (not one failed item)."""


class Reply(BaseModel):
    """One teacher answer."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TeacherClient(Protocol):
    """Sends one request for one question."""

    async def complete(self, messages: list[dict[str, str]]) -> Reply: ...

    async def close(self) -> None: ...


# ------------------------------------------------------------------------------------------- urls
def generate_url(base_url: str) -> str:
    """TGI's `/generate` URL for a server root (or an URL that already ends in /generate)."""
    u = base_url.rstrip("/")
    return u if u.endswith("/generate") else f"{u}/generate"


def server_root(base_url: str) -> str:
    """The server root of a TGI URL (strips a trailing /generate or /v1[/chat/completions])."""
    u = base_url.rstrip("/")
    for suffix in ("/generate", "/chat/completions", "/v1"):
        if u.endswith(suffix):
            u = u[: -len(suffix)]
    return u


def api_key(t: TeacherSpec) -> str:
    """The API key from the environment variable the teacher names (a placeholder when none).

    The variable must be on this machine's allow-list (`COTD_API_KEY_ENV_ALLOW`), checked before it is read.
    """
    if not t.api_key_env:
        return NO_KEY
    check_api_key_env(t.name, t.api_key_env, get_settings())
    key = os.environ.get(t.api_key_env)
    if not key:
        raise TeacherError(f"teacher {t.name}: environment variable {t.api_key_env} (api_key_env) is not set")
    return key


def resolve_base_url(t: TeacherSpec) -> str:
    """The teacher's server URL, or COTD_TEACHER_URL when the grid names none."""
    if t.base_url:
        return t.base_url
    url = get_settings().teacher_url
    if not url:
        raise TeacherError(f"teacher {t.name}: kind {t.kind} needs base_url (or COTD_TEACHER_URL)")
    return url


# ---------------------------------------------------------------------------------------- clients
def inference_client(t: TeacherSpec, **kwargs: Any):
    """An `AsyncInferenceClient` whose requests go over the aiohttp transport (see transport.py).

    The hub creates its httpx2 client lazily; we hand it ours (closed with the inference client).
    Should a hub release stop using `_async_client`, the hub's default client is used instead.
    """
    from huggingface_hub import AsyncInferenceClient

    from services.generator.teachers.transport import http_client

    client = AsyncInferenceClient(timeout=t.timeout_s, **kwargs)
    if getattr(client, "_async_client", False) is None:
        http = http_client(limit=max(t.concurrency, 1))
        client._async_client = http
        client.exit_stack.push_async_callback(http.aclose)
    return client


@lru_cache(maxsize=4)
def load_tokenizer(model: str, revision: str | None = None):
    """The teacher's tokenizer (hub id or local path), cached per process."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model, revision=revision)
    except Exception as exc:
        raise TeacherError(f"cannot load the tokenizer of teacher model {model!r}: {exc}") from None


def apply_chat_template(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text; templates that reject a system turn get it merged into the user turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise TeacherError("the teacher tokenizer has no chat template; use route 'chat' or a chat model")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        merged = [
            {
                "role": m["role"],
                "content": f"{system}\n\n{m['content']}" if m["role"] == "user" and system else m["content"],
            }
            for m in messages
            if m["role"] != "system"
        ]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)


class GenerateClient:
    """TGI `/generate` with the teacher's chat template applied here."""

    def __init__(self, t: TeacherSpec, base_url: str) -> None:
        if not t.model:
            raise TeacherError(f"teacher {t.name}: route 'generate' needs `model` (for its chat template)")
        self.t = t
        self.tokenizer = load_tokenizer(t.model, t.revision)
        self.client = inference_client(t, model=generate_url(server_root(base_url)), token=api_key(t))

    async def complete(self, messages: list[dict[str, str]]) -> Reply:
        prompt = apply_chat_template(self.tokenizer, messages)
        sampling = self.t.temperature > 0
        out = await self.client.text_generation(
            prompt,
            details=True,
            max_new_tokens=self.t.max_new_tokens,
            do_sample=sampling,
            temperature=self.t.temperature if sampling else None,
            top_p=self.t.top_p if sampling else None,
            frequency_penalty=self.t.frequency_penalty,
            return_full_text=False,
        )
        text = out.generated_text if hasattr(out, "generated_text") else str(out)
        n_out = out.details.generated_tokens if getattr(out, "details", None) else 0
        n_in = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return Reply(text=text, prompt_tokens=n_in, completion_tokens=n_out)

    async def close(self) -> None:
        await self.client.close()


class ChatClient:
    """Chat completions: TGI `/v1/chat/completions` or any OpenAI-compatible endpoint."""

    def __init__(self, t: TeacherSpec, base_url: str) -> None:
        self.t = t
        url = base_url.rstrip("/")
        if t.kind == "tgi":
            url = server_root(url) + "/v1/chat/completions"
        elif not t.model:
            raise TeacherError(f"teacher {t.name}: kind openai needs `model`")
        self.client = inference_client(t, base_url=url, api_key=api_key(t))

    async def complete(self, messages: list[dict[str, str]]) -> Reply:
        out = await self.client.chat_completion(
            messages,
            model=self.t.model or "tgi",
            max_tokens=self.t.max_new_tokens,
            temperature=self.t.temperature,
            top_p=self.t.top_p,
            frequency_penalty=self.t.frequency_penalty,
        )
        if not out.choices:
            raise ValueError("the server answered with no choices")
        text = out.choices[0].message.content or ""
        usage = out.usage
        return Reply(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    async def close(self) -> None:
        await self.client.close()


def make_client(t: TeacherSpec) -> TeacherClient:
    """The client for a tgi/openai teacher."""
    base = resolve_base_url(t)
    if t.kind == "tgi" and t.route == "generate":
        return GenerateClient(t, base)
    if t.kind in ("tgi", "openai"):
        return ChatClient(t, base)
    raise TeacherError(f"teacher {t.name}: kind {t.kind} calls no server")


# ---------------------------------------------------------------------------------------- journal
class Journal:
    """Append-only JSONL of finished items (one flushed line per item), for resuming."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None

    def load(self) -> dict[str, CotRecord]:
        """Finished records by id (the last line of an id wins; a torn last line is ignored)."""
        done: dict[str, CotRecord] = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rec = CotRecord.model_validate_json(line)
            except ValueError:
                continue  # a line cut short by a kill
            done[rec.id] = rec
        return done

    def append(self, rec: CotRecord) -> None:
        """Write one record and flush it."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if self._fh.tell() and not self.path.read_bytes().endswith(b"\n"):
                self._fh.write("\n")  # finish a torn line so the next record starts clean
        self._fh.write(rec.model_dump_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def journal_path(spec: CotSetSpec, workdir: Path) -> Path:
    """Where the teacher's finished items are journaled for this CoT set."""
    return Path(workdir) / f"teacher-{spec.key.replace('/', '_')}.jsonl"


# --------------------------------------------------------------------------------------- generate
class RunStats(BaseModel):
    """What one generation did (for logs and tests)."""

    requested: int = 0  # items asked for in this run (not resumed)
    resumed: int = 0
    failed: int = 0
    attempts: int = 0
    min_limit: int = 0


class _Run:
    """One generation's shared state: asks for items, retries them, journals what finishes.

    `max_limit` worker tasks take the items in order, one request at a time each, so a worker
    whose request ends takes its next item within the same loop step (no hand-over between tasks)
    and a long question list costs no task per item. An item to retry backs off in a task of its
    own, so its worker goes on with the next item meanwhile.
    """

    def __init__(
        self,
        spec: CotSetSpec,
        client: TeacherClient,
        limiter: AdaptiveLimiter,
        policy: RetryPolicy,
        stats: RunStats,
        journal: Journal,
        results: dict[str, CotRecord],
        check: Callable[[], None] | None,
    ) -> None:
        self.spec, self.t, self.client, self.limiter = spec, spec.teacher, client, limiter
        self.policy, self.stats, self.check = policy, stats, check
        self.journal, self.results = journal, results
        self.deadlines = Deadlines(tick_for(self.t.timeout_s))
        self.backing_off: set[asyncio.Task] = set()

    async def run(self, todo: list[Question]) -> None:
        """Ask for every item of `todo` until each is answered or has failed for good.

        When a worker raises (`check()` stopping a cancelled grid), the other workers and the
        back-offs are cancelled before the exception leaves: nothing is asked after the stop.
        """
        loop = asyncio.get_running_loop()
        pending = iter(todo)
        workers = [
            loop.create_task(self._worker(pending)) for _ in range(min(len(todo), self.limiter.max_limit))
        ]
        self.deadlines.start()
        try:
            await asyncio.gather(*workers)
            while self.backing_off:
                await asyncio.gather(*self.backing_off)
        finally:
            left = [t for t in (*workers, *self.backing_off) if not t.done()]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            await self.deadlines.stop()

    async def _worker(self, pending) -> None:
        for q in pending:  # one iterator shared by the workers: each item goes to one of them
            await self._drive(q, build_messages(q, self.spec.level or 3, self.spec.format or "cot"), 0)

    async def _drive(self, q: Question, messages: list[dict[str, str]], attempt: int) -> None:
        """Attempt `attempt` for `q`: finish the item, or schedule its next attempt after a back-off."""
        out = await self._attempt(q, messages)
        if isinstance(out, CotRecord):
            self._finish(out)
        elif out.retryable and attempt < self.t.max_retries:
            wait = self.policy.delay(attempt, out.retry_after)
            task = asyncio.get_running_loop().create_task(self._retry(q, messages, attempt + 1, wait))
            self.backing_off.add(task)
            task.add_done_callback(self.backing_off.discard)
        else:
            self.stats.failed += 1
            error = f"failed after {attempt + 1} attempt(s): {out.message}"
            self._finish(CotRecord(id=q.id, question=q.text, error=error))

    async def _retry(self, q: Question, messages: list[dict[str, str]], attempt: int, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._drive(q, messages, attempt)

    async def _attempt(self, q: Question, messages: list[dict[str, str]]) -> CotRecord | Failure:
        """One request under a limiter slot: the item's record, or the classified failure."""
        t, limiter = self.t, self.limiter
        async with limiter.slot() as epoch:
            self.stats.attempts += 1
            start = time.perf_counter()
            try:
                with self.deadlines.within(t.timeout_s):
                    reply = await self.client.complete(messages)
            except Exception as exc:  # classified: every failure is counted and maybe retried
                f = classify(exc)
                observe_teacher_request(t.name, f.status, time.perf_counter() - start, http_code=f.http_code)
                if f.overloaded:
                    limiter.overloaded(epoch)
                    self.stats.min_limit = min(self.stats.min_limit, limiter.limit)
                return f
            observe_teacher_request(
                t.name, "ok", time.perf_counter() - start, reply.prompt_tokens, reply.completion_tokens
            )
            limiter.succeeded()
        if not reply.text.strip():
            return CotRecord(
                id=q.id, question=q.text, rationale=reply.text, error="empty reply from the teacher"
            )
        return CotRecord(id=q.id, question=q.text, rationale=reply.text.strip())

    def _finish(self, rec: CotRecord) -> None:
        self.journal.append(rec)
        self.results[rec.id] = rec
        if self.check:
            self.check()


async def generate_remote(
    spec: CotSetSpec,
    questions: list[Question],
    workdir: Path,
    policy: RetryPolicy | None = None,
    client: TeacherClient | None = None,
    stats: RunStats | None = None,
    check: Callable[[], None] | None = None,
    limiter: AdaptiveLimiter | None = None,
) -> list[CotRecord]:
    """Ask the teacher for every question not yet in the journal; records in question order.

    `check()` is called after each item is journaled; an exception it raises stops the run (a
    cancelled grid), and the journaled replies are kept. `limiter` replaces the default one
    (`AdaptiveLimiter(teacher.concurrency)`), so a caller can read its limit as it adapts.
    """
    policy = policy or RetryPolicy()
    stats = stats if stats is not None else RunStats()
    unique: dict[str, Question] = {}
    for q in questions:
        unique.setdefault(q.id, q)
    journal = Journal(journal_path(spec, workdir))
    done = {i: r for i, r in journal.load().items() if i in unique and r.error is None}
    todo = [q for i, q in unique.items() if i not in done]
    stats.resumed, stats.requested = len(done), len(todo)
    if done:
        log.info(
            "teacher %s: resuming, %d of %d items already done", spec.teacher.name, len(done), len(unique)
        )
    if limiter is None:
        limiter = AdaptiveLimiter(spec.teacher.concurrency, spec.teacher.name)
    stats.min_limit = limiter.limit
    own = client is None
    client = client or make_client(spec.teacher)
    results: dict[str, CotRecord] = dict(done)
    try:
        await _Run(spec, client, limiter, policy, stats, journal, results, check).run(todo)
    finally:
        journal.close()
        if own:
            await client.close()
    return [results[i] for i in unique]


def _run_sync(coro):
    """Run a coroutine to completion, also from a thread that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    th = threading.Thread(target=target, name="cotd-teacher")
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def remote_records(
    spec: CotSetSpec,
    questions: list[Question],
    workdir: Path,
    policy: RetryPolicy | None = None,
    check: Callable[[], None] | None = None,
) -> list[CotRecord]:
    """Rationales from a tgi/openai teacher, one record per question (failures keep their error)."""
    return _run_sync(generate_remote(spec, questions, Path(workdir), policy, check=check))
