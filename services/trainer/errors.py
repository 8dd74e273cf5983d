"""The trainer's error."""

from __future__ import annotations

from shared.errors import CotdError


class TrainingError(CotdError, RuntimeError):
    """Training cannot go on (non-finite loss, empty data, bad settings)."""
