"""One pydantic model per queue message. Messages carry configuration (specs) and keys, never data.

A task validates its message as its first line; a message that does not validate is rejected
(logged with the reason, acknowledged, never redelivered).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.queues import Queue
from shared.specs import CheckpointSpec, CotSetSpec, EvalSpec

GRID_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class BadMessage(ValueError):
    """A queue message that cannot be processed; the reason is one line."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    grid_id: str = Field(pattern=GRID_ID_PATTERN, description="The grid this work belongs to.")


class GenerateMessage(_Message):
    """Build one CoT set (cotsets/<cot.key>)."""

    cot: CotSetSpec

    @property
    def key(self) -> str:
        """The artifact this message builds."""
        return self.cot.key


class TrainMessage(_Message):
    """Train one checkpoint (checkpoints/<checkpoint.key>) on a published CoT set."""

    checkpoint: CheckpointSpec

    @property
    def key(self) -> str:
        """The artifact this message builds."""
        return self.checkpoint.key


class EvaluateMessage(_Message):
    """Score one checkpoint on a test set (evals/<evaluation.key>)."""

    evaluation: EvalSpec

    @property
    def key(self) -> str:
        """The artifact this message builds."""
        return self.evaluation.key


Message = GenerateMessage | TrainMessage | EvaluateMessage

MESSAGE_TYPES: dict[Queue, type[GenerateMessage] | type[TrainMessage] | type[EvaluateMessage]] = {
    Queue.GENERATE: GenerateMessage,
    Queue.TRAIN: TrainMessage,
    Queue.EVALUATE: EvaluateMessage,
}


def _reason(exc: ValidationError) -> str:
    errs = exc.errors()
    first = errs[0]
    loc = ".".join(str(p) for p in first["loc"]) or "message"
    kind = {"extra_forbidden": "unknown field", "missing": "missing field"}.get(first["type"], first["msg"])
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {kind}{more}"


def parse_message(queue: Queue | str, payload: Any) -> Message:
    """Validate a task's payload for `queue`; raise BadMessage with a one-line reason."""
    model = MESSAGE_TYPES[Queue(queue)]
    try:
        if isinstance(payload, str | bytes):
            return model.model_validate_json(payload)
        if not isinstance(payload, dict):
            raise BadMessage(f"{queue} message must be a JSON object, got {type(payload).__name__}")
        return model.model_validate(payload)
    except ValidationError as e:
        raise BadMessage(f"{queue} message: {_reason(e)}") from None


def dump_message(msg: Message) -> dict[str, Any]:
    """The JSON-ready payload of a message."""
    return msg.model_dump(mode="json")
