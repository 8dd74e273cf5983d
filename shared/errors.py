"""The base of every error whose message is meant for the user: one line naming the file, field or item."""

from __future__ import annotations


class CotdError(Exception):
    """A user-facing error; the CLI prints its first line and exits 1 (no traceback)."""
