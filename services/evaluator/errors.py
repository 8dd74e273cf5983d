"""Evaluator errors (kept free of heavy imports so the CLI can catch them cheaply)."""

from __future__ import annotations

from shared.errors import CotdError


class EvaluationError(CotdError, RuntimeError):
    """An evaluation cannot run as asked: an unknown or missing backend, an empty test set..."""
