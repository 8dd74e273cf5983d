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
from services.generator.teachers.retry import RetryPolicy, classify
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


async def _one(
    q: Question,
    spec: CotSetSpec,
    client: TeacherClient,
    limiter: AdaptiveLimiter,
    policy: RetryPolicy,
    stats: RunStats,
    deadlines: Deadlines,
) -> CotRecord:
    t = spec.teacher
    messages = build_messages(q, spec.level or 3, spec.format or "cot")
    last = "no attempt made"
    for attempt in range(t.max_retries + 1):
        async with limiter.slot() as epoch:
            stats.attempts += 1
            start = time.perf_counter()
            try:
                with deadlines.within(t.timeout_s):
                    reply = await client.complete(messages)
            except Exception as exc:  # classified below: every failure is counted and maybe retried
                f = classify(exc)
                observe_teacher_request(t.name, f.status, time.perf_counter() - start, http_code=f.http_code)
                if f.overloaded:
                    limiter.overloaded(epoch)
                    stats.min_limit = min(stats.min_limit, limiter.limit)
                last = f.message
                retry = f.retryable and attempt < t.max_retries
            else:
                observe_teacher_request(
                    t.name, "ok", time.perf_counter() - start, reply.prompt_tokens, reply.completion_tokens
                )
                limiter.succeeded()
                if not reply.text.strip():
                    return CotRecord(
                        id=q.id, question=q.text, rationale=reply.text, error="empty reply from the teacher"
                    )
                return CotRecord(id=q.id, question=q.text, rationale=reply.text.strip())
        if not retry:
            break
        await asyncio.sleep(policy.delay(attempt, f.retry_after))
    stats.failed += 1
    return CotRecord(id=q.id, question=q.text, error=f"failed after {attempt + 1} attempt(s): {last}")


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
    deadlines = Deadlines(tick_for(spec.teacher.timeout_s))

    async def run(q: Question) -> None:
        rec = await _one(q, spec, client, limiter, policy, stats, deadlines)
        journal.append(rec)
        results[q.id] = rec
        if check:
            check()

    deadlines.start()
    try:
        await asyncio.gather(*(run(q) for q in todo))
    finally:
        await deadlines.stop()
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
