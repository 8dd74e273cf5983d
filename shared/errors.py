"""The base of every error whose message is meant for the user: one line naming the file, field or item."""

from __future__ import annotations


class CotdError(Exception):
    """A user-facing error; the CLI prints its first line and exits 1 (no traceback)."""


def first_line(e: BaseException) -> str:
    """The first line of an error's message, or its type's name when the message is empty."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def reason_of(stage: str, exc: BaseException) -> str:
    """One line of at most 500 characters: `stage: Type: message` (a failed cell's reason)."""
    return (f"{stage}: {type(exc).__name__}: {exc}".strip().splitlines() or [stage])[0][:500]
