"""OpenAI-compatible routes of `cotd teacher serve`: chat completions, completions, models.

Requests are validated field by field (OpenAI's ranges; unknown fields and features this server
does not implement are refused with a 422, never ignored). Errors use TGI's ``{"error", "error_type"}``
body, as TGI's own OpenAI routes do; the ``openai`` package raises ``UnprocessableEntityError``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from services.generator.server_protocol import (
    Limits,
    RequestError,
    Sampling,
    check_text,
    fit_prompt,
    invalid,
    new_tokens,
    pydantic_error,
)

ROLES = ("system", "developer", "user", "assistant")
MAX_N = 8


class ContentPart(BaseModel):
    """One part of a message's content (only text parts are supported)."""

    model_config = {"extra": "allow"}

    type: str = Field(description="`text` (image and audio parts are refused).")
    text: str | None = Field(None, description="The text of a `text` part.")


class ChatMessage(BaseModel):
    """One chat message."""

    role: str = Field(description="system, developer (read as system), user or assistant.")
    content: str | list[ContentPart] | None = Field(None, description="A string or a list of text parts.")
    name: str | None = Field(None, description="Accepted; not shown to the model.")


class StreamOptions(BaseModel):
    """OpenAI ``stream_options``."""

    include_usage: bool = Field(False, description="Send a last chunk with the usage.")


class _Common(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = {"extra": "forbid"}

    model: str | None = Field(None, description="Any name; answers carry it back.")
    temperature: float | None = Field(None, description="0 (greedy) .. 2.")
    top_p: float | None = Field(None, description="Nucleus mass, 0 < p <= 1.")
    n: int = Field(1, description=f"Choices per prompt, 1..{MAX_N}.")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop sequences.")
    stream: bool = Field(False, description="Server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    seed: int | None = Field(None, description="Sampling seed (choice k uses seed + k).")
    frequency_penalty: float | None = Field(None, description="-2 .. 2.")
    presence_penalty: float | None = Field(None, description="Refused unless 0 (not implemented).")
    logit_bias: dict[str, float] | None = Field(None, description="Refused when set (not implemented).")
    user: str | None = Field(None, description="Accepted; not used.")
    truncate: int | None = Field(
        None, description="cotd extension (TGI's): keep only the last N prompt tokens."
    )


class ChatRequest(_Common):
    """OpenAI ``/v1/chat/completions`` body."""

    messages: list[ChatMessage] = Field(description="The conversation (at least one message).")
    max_tokens: int | None = Field(None, description="Completion tokens (deprecated name).")
    max_completion_tokens: int | None = Field(None, description="Completion tokens.")
    logprobs: bool = Field(False, description="Return each token's logprob.")
    top_logprobs: int | None = Field(None, description="0..5 alternatives per token (needs logprobs).")
    response_format: dict[str, Any] | None = Field(None, description='Only {"type": "text"}.')
    tools: list[Any] | None = Field(None, description="Refused when set (no tool calling).")
    tool_choice: Any = Field(None, description="Refused unless none.")


class CompletionRequest(_Common):
    """OpenAI ``/v1/completions`` body."""

    prompt: str | list[str] = Field(description="A prompt or a list of prompts (text).")
    max_tokens: int | None = Field(16, description="Completion tokens (OpenAI's default 16).")
    logprobs: int | None = Field(
        None, description="0..5: logprobs of the sampled and the most likely tokens."
    )
    echo: bool = Field(False, description="Prepend the prompt to each choice's text.")
    suffix: str | None = Field(None, description="Refused when set (no insertion).")
    best_of: int | None = Field(None, description="Refused above 1.")


def parse(model: type[BaseModel], body: Any) -> Any:
    """`body` validated as `model`, or a 422 naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise pydantic_error(exc) from None


def stops(req: _Common, limits: Limits) -> list[str]:
    """The stop sequences, at most `limits.max_stop_sequences`."""
    out = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(out) > limits.max_stop_sequences:
        raise invalid(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(out)}")
    for i, s in enumerate(out):
        check_text(s, f"stop[{i}]")
    return out


def sampling(req: _Common) -> Sampling:
    """OpenAI's sampling fields checked (0 <= temperature <= 2, 0 < top_p <= 1, ...)."""
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise invalid(f"`temperature` must be >= 0 and <= 2. Given: {req.temperature}")
    if req.top_p is not None and not 0 < req.top_p <= 1:
        raise invalid(f"`top_p` must be > 0 and <= 1. Given: {req.top_p}")
    if not 1 <= req.n <= MAX_N:
        raise invalid(f"`n` must be >= 1 and <= {MAX_N}. Given: {req.n}")
    if req.frequency_penalty is not None and not -2 <= req.frequency_penalty <= 2:
        raise invalid("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if req.presence_penalty:
        raise invalid("`presence_penalty` is not supported by cotd teacher serve (0 or null only)")
    if req.logit_bias:
        raise invalid("`logit_bias` is not supported by cotd teacher serve")
    sample = bool(req.temperature) or (req.temperature is None and req.top_p is not None and req.top_p < 1)
    return Sampling(
        do_sample=sample,
        temperature=req.temperature if sample and req.temperature else 1.0,
        top_p=req.top_p if sample and req.top_p is not None else 1.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        seed=req.seed,
    )


def chat_messages(req: ChatRequest) -> list[dict[str, str]]:
    """The messages as ``{"role", "content"}`` strings (text parts joined), roles checked."""
    if not req.messages:
        raise invalid("`messages` must contain at least one message")
    if req.tools or req.tool_choice not in (None, "none"):
        raise invalid("`tools` are not supported by cotd teacher serve")
    if req.response_format and req.response_format.get("type") != "text":
        raise invalid('`response_format` supports only {"type": "text"}')
    if req.top_logprobs is not None and (not req.logprobs or not 0 <= req.top_logprobs <= 5):
        raise invalid("`top_logprobs` must be >= 0 and <= 5, with `logprobs: true`")
    out = []
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            raise invalid(f"`messages[{i}].role`: unknown role {m.role!r} (one of {', '.join(ROLES)})")
        if isinstance(m.content, list):
            parts = []
            for k, part in enumerate(m.content):
                if part.type != "text" or part.text is None:
                    raise invalid(
                        f"`messages[{i}].content[{k}]`: only text parts are supported (got {part.type!r})"
                    )
                parts.append(part.text)
            text = "".join(parts)
        else:
            text = m.content or ""
        check_text(text, f"messages[{i}].content")
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return out


def completion_prompts(req: CompletionRequest) -> list[str]:
    """The prompts of a completion request (refusing what is not implemented)."""
    if req.suffix:
        raise invalid("`suffix` is not supported by cotd teacher serve")
    if req.best_of not in (None, 1):
        raise invalid(f"`best_of` must be 1 (cotd teacher serve). Given: {req.best_of}")
    if req.logprobs is not None and not 0 <= req.logprobs <= 5:
        raise invalid(f"`logprobs` must be >= 0 and <= 5. Given: {req.logprobs}")
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if not prompts:
        raise invalid("`prompt` must not be an empty list")
    for i, p in enumerate(prompts):
        check_text(p, "prompt" if isinstance(req.prompt, str) else f"prompt[{i}]")
    return prompts


def fit(
    ids: list[int], requested: int | None, truncate: int | None, limits: Limits, field: str, source: str
) -> tuple[list[int], int]:
    """Prompt ids within limits and the tokens to generate (OpenAI: the room left when not given).

    `field` names the token budget (``max_tokens``...), `source` what the prompt came from in the request.
    """
    try:
        ids = fit_prompt(ids, truncate, limits)
    except RequestError as exc:
        raise RequestError(str(exc).replace("`inputs`", f"`{source}`")) from None
    if requested is None:
        requested = limits.max_total_tokens - len(ids)
    return ids, new_tokens(requested, len(ids), limits, field)


def finish(reason: str) -> Literal["stop", "length"]:
    """OpenAI's finish reason."""
    return "stop" if reason in ("eos_token", "stop_sequence") else "length"


def token_logprob(t: Any) -> dict[str, Any]:
    """A chat ``logprobs.content`` entry."""
    return {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode("utf-8", "replace"))}


def chat_logprobs(tokens: list[Any], top: int | None) -> dict[str, Any]:
    """Chat ``choices[i].logprobs``."""
    content = []
    for t in tokens:
        entry = token_logprob(t)
        entry["top_logprobs"] = [token_logprob(a) for a in t.top[: top or 0]]
        content.append(entry)
    return {"content": content, "refusal": None}


def completion_logprobs(tokens: list[Any], start: int) -> dict[str, Any]:
    """Legacy completions ``logprobs`` (text offsets from `start`)."""
    offsets, pos = [], start
    for t in tokens:
        offsets.append(pos)
        pos += len(t.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{a.text: a.logprob for a in t.top} for t in tokens],
        "text_offset": offsets,
    }


def new_id(prefix: str) -> tuple[str, int]:
    """An answer id and its creation time."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())


def models_list(model_id: str, created: int) -> dict[str, Any]:
    """``GET /v1/models``."""
    return {
        "object": "list",
        "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "cotd"}],
    }
