"""results.json: one row per grid cell, with its keys, metrics and CoT set statistics."""

from __future__ import annotations

import json
from typing import Any

from shared.artifacts import ArtifactStore
from shared.grid import Cell, GridSpec

METRIC_FIELDS = (
    "accuracy",
    "ci_low",
    "ci_high",
    "accuracy_strict",
    "ci_low_strict",
    "ci_high_strict",
    "n",
    "extraction_failure_rate",
    "mean_output_tokens",
)


def cell_row(
    cell: Cell, store: ArtifactStore, status: str | None = None, error: str | None = None
) -> dict[str, Any]:
    """The results row of a cell; metrics are null when its evaluation is not published."""
    ev = store.manifest("evals", cell.evaluation.key)
    cot = store.manifest("cotsets", cell.cot.key)
    metrics = (ev or {}).get("metrics", {})
    row: dict[str, Any] = {
        "dataset": cell.dataset,
        "teacher": cell.teacher,
        "teacher_kind": cell.teacher_kind,
        "level": cell.level,
        "format": cell.format,
        "student": cell.student,
        "seed": cell.seed,
        **{f: metrics.get(f) for f in METRIC_FIELDS},
        "cot_key": cell.cot.key,
        "checkpoint_key": cell.checkpoint.key,
        "eval_key": cell.evaluation.key,
        "status": status or ("done" if ev else "missing"),
        "error": error,
        "cot_stats": (cot or {}).get("stats"),
    }
    return row


def results_doc(grid: GridSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The results.json document."""
    return {"grid": json.loads(grid.model_dump_json()), "cells": rows}
