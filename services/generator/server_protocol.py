"""Request shapes and validation of `cotd teacher serve` (TGI's rules and messages), pure functions.

Every check raises :class:`RequestError`, which the server answers with its own status and
``{"error", "error_type"}`` JSON (TGI's error body), so one bad request never fails another.
Messages follow TGI's router (``Input validation error: `field` ...``) and name the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError


class RequestError(Exception):
    """A request the server refuses: HTTP `status`, TGI `error_type`, a one-line message."""

    def __init__(self, message: str, status: int = 422, error_type: str = "validation") -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def invalid(message: str) -> RequestError:
    """A 422 `validation` error with TGI's prefix."""
    return RequestError(f"Input validation error: {message}")


@dataclass(frozen=True)
class Limits:
    """What the server accepts (reported by ``/info``)."""

    max_input_tokens: int
    max_total_tokens: int
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_best_of: int = 1


class GenParams(BaseModel):
    """TGI ``parameters``. Every field is either honoured or refused with a 422 when set (never ignored)."""

    model_config = {"extra": "forbid"}

    max_new_tokens: int | None = Field(None, description="Tokens to generate (default 100, TGI's).")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float | None = Field(None, description="Softmax temperature (> 0); != 1 implies sampling.")
    top_k: int | None = Field(None, description="Keep the k most likely tokens (> 0); implies sampling.")
    top_p: float | None = Field(None, description="Nucleus mass (0 < p < 1); implies sampling.")
    typical_p: float | None = Field(None, description="Refused unless null or 1.0 (not implemented).")
    repetition_penalty: float | None = Field(None, description="CTRL-style penalty (> 0; 1 = none).")
    frequency_penalty: float | None = Field(None, description="Subtracted per earlier occurrence (-2..2).")
    seed: int | None = Field(None, description="Sampling seed of this request.")
    stop: list[str] = Field(
        default_factory=list, description="Stop sequences (included in the text, as TGI)."
    )
    truncate: int | None = Field(None, description="Keep only the last N prompt tokens (left truncation).")
    details: bool = Field(False, description="Return tokens, logprobs and the finish reason.")
    decoder_input_details: bool = Field(
        False, description="Also return the prompt tokens' logprobs (prefill)."
    )
    top_n_tokens: int | None = Field(None, description="Also return the n most likely tokens at each step.")
    return_full_text: bool = Field(False, description="Prepend the prompt to the generated text.")
    best_of: int | None = Field(None, description="Refused above /info's max_best_of (1).")
    watermark: bool = Field(False, description="Refused when true (not implemented).")
    grammar: Any = Field(None, description="Refused when set (not implemented).")
    adapter_id: str | None = Field(None, description="Refused when set (no adapters).")


class GenerateRequest(BaseModel):
    """TGI ``/generate`` body."""

    inputs: str = Field(description="The prompt, as is (no template applied).")
    parameters: GenParams = Field(default_factory=GenParams, description="Generation parameters.")
    stream: bool = Field(False, description="`POST /` only: answer with server-sent events.")


@dataclass
class Sampling:
    """How one row picks its next token."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    seed: int | None = None


def pydantic_error(exc: ValidationError) -> RequestError:
    """The first pydantic error, naming its field like TGI does (`a.b`)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return invalid(f"`{where}`: {err.get('msg', 'invalid')}")


def check_text(value: str, field: str) -> None:
    """Refuse text that is not valid Unicode (e.g. a lone surrogate from ``"\\ud800"``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(f"`{field}` is not valid UTF-8 text (lone surrogate at position {exc.start})") from None


def sampling_of(p: GenParams) -> Sampling:
    """Validate `p`'s sampling fields (TGI's rules) and return the row's sampling settings."""
    if p.temperature is not None and p.temperature <= 0:
        raise invalid("`temperature` must be strictly positive")
    if p.top_p is not None and not 0 < p.top_p < 1:
        raise invalid("`top_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise invalid("`top_k` must be strictly positive")
    if p.typical_p is not None and p.typical_p != 1.0:
        raise invalid("`typical_p` is not supported by cotd teacher serve (null or 1.0 only)")
    if p.repetition_penalty is not None and p.repetition_penalty <= 0:
        raise invalid("`repetition_penalty` must be strictly positive")
    if p.frequency_penalty is not None and not -2 <= p.frequency_penalty <= 2:
        raise invalid("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if p.watermark:
        raise invalid("`watermark` is not supported by cotd teacher serve")
    if p.grammar is not None:
        raise invalid("`grammar` is not supported by cotd teacher serve")
    if p.adapter_id:
        raise invalid("`adapter_id` is not supported by cotd teacher serve (no adapters loaded)")
    warped = (p.temperature not in (None, 1.0)) or p.top_k is not None or p.top_p is not None
    return Sampling(
        do_sample=p.do_sample or warped,
        temperature=p.temperature or 1.0,
        top_k=p.top_k or 0,
        top_p=p.top_p or 1.0,
        repetition_penalty=p.repetition_penalty or 1.0,
        frequency_penalty=p.frequency_penalty or 0.0,
        seed=p.seed,
    )


def check_options(p: GenParams, limits: Limits) -> None:
    """TGI's checks of best_of, stop and top_n_tokens."""
    if p.best_of is not None and not 0 < p.best_of <= limits.max_best_of:
        raise invalid(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {p.best_of}")
    if len(p.stop) > limits.max_stop_sequences:
        raise invalid(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(p.stop)}"
        )
    for i, s in enumerate(p.stop):
        check_text(s, f"stop[{i}]")
    if p.top_n_tokens is not None and not 0 <= p.top_n_tokens <= limits.max_top_n_tokens:
        raise invalid(
            f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {p.top_n_tokens}"
        )


def fit_prompt(ids: list[int], truncate: int | None, limits: Limits) -> list[int]:
    """The prompt's token ids within the input limit: left-truncated to `truncate`, else refused when too long."""
    if not ids:
        raise invalid("`inputs` cannot be empty")
    if truncate is not None:
        if not 0 < truncate <= limits.max_input_tokens:
            raise invalid(
                f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. Given: {truncate}"
            )
        ids = ids[-truncate:]
    if len(ids) > limits.max_input_tokens:
        raise invalid(
            f"`inputs` tokens must be <= {limits.max_input_tokens}. Given: {len(ids)}"
            " (pass `truncate` to keep only the last tokens)"
        )
    return ids


def new_tokens(
    requested: int | None, input_length: int, limits: Limits, field: str = "max_new_tokens"
) -> int:
    """`requested` checked against ``max_total_tokens - input`` (or the room left, capped at 100, when None)."""
    room = limits.max_total_tokens - input_length
    if requested is None:
        return max(1, min(100, room))
    if requested <= 0:
        raise invalid(f"`{field}` must be strictly positive")
    if requested > room:
        raise invalid(
            f"`inputs` tokens + `{field}` must be <= {limits.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {requested} `{field}`"
        )
    return requested


def parse_generate(body: Any, limits: Limits) -> GenerateRequest:
    """A `/generate` body validated field by field (tokenization happens later, per request)."""
    try:
        req = GenerateRequest.model_validate(body)
    except ValidationError as exc:
        raise pydantic_error(exc) from None
    check_text(req.inputs, "inputs")
    if not req.inputs:
        raise invalid("`inputs` cannot be empty")
    check_options(req.parameters, limits)
    return req
