"""Evaluator errors (kept free of heavy imports so the CLI can catch them cheaply)."""

from __future__ import annotations


class EvaluationError(RuntimeError):
    """An evaluation cannot run as asked: an unknown or missing backend, an empty test set..."""
