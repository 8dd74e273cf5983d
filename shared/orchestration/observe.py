"""Stage metrics recorded from what a finished stage published (its manifest and files).

Each is skipped when the stage's own code already moved the metric during the task (so a stage
instrumented live is never counted twice). "The task's own code" is told apart from other tasks
running in threads of the same worker by a per-context tally (:func:`shared.metrics.task_tally`),
not by a process-wide before/after comparison.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from shared import metrics as m

log = logging.getLogger("cotd.worker")
TEACHER_STATUSES = ("ok", "overloaded", "http_error", "timeout", "error")


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one series of the cotd registry (0 when absent)."""
    return m.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def init_teacher_series(teacher: str, concurrency: int) -> None:
    """Create a teacher's series at zero, so dashboards show 0 rather than nothing before any event."""
    for status in TEACHER_STATUSES:
        m.GENERATOR_TEACHER_REQUESTS.labels(teacher=teacher, status=status)
    m.GENERATOR_TEACHER_LATENCY.labels(teacher=teacher)
    for kind in ("prompt", "completion"):
        m.GENERATOR_TEACHER_TOKENS.labels(teacher=teacher, kind=kind)
    for code in ("429", "503"):
        m.GENERATOR_TEACHER_OVERLOADED.labels(teacher=teacher, code=code)
    for outcome in ("correct", "incorrect", "unparsed"):
        m.GENERATOR_RATIONALES.labels(teacher=teacher, outcome=outcome)
    gauge = m.GENERATOR_CONCURRENCY_LIMIT.labels(teacher=teacher)
    if not sample("cotd_generator_concurrency_limit", {"teacher": teacher}):
        gauge.set(concurrency)


def init_stage_series(stage: str) -> None:
    """A worker's task series (and the evaluator's outcomes) at zero from the start."""
    for metric in (
        m.WORKER_TASKS_STARTED,
        m.WORKER_TASKS_SUCCEEDED,
        m.WORKER_TASKS_FAILED,
        m.WORKER_TASKS_RETRIED,
    ):
        metric.labels(stage=stage)
    m.WORKER_IN_PROGRESS.labels(stage=stage)
    m.WORKER_TASK_DURATION.labels(stage=stage)
    if stage == "evaluate":
        for outcome in ("correct", "incorrect", "unparsed"):
            m.EVALUATOR_PREDICTIONS.labels(outcome=outcome)


def observe_generate(teacher: str, cot_dir: Path, tally: m.TaskTally) -> None:
    """Rationales by outcome, from the published cot.jsonl."""
    if tally.moved(m.GENERATOR_RATIONALES):
        return
    counts = {"correct": 0, "incorrect": 0, "unparsed": 0}
    path = cot_dir / "cot.jsonl"
    if not path.exists():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("error"):
            continue
        outcome = "unparsed" if not rec.get("parsed") else ("correct" if rec.get("correct") else "incorrect")
        counts[outcome] += 1
    for outcome, n in counts.items():
        m.GENERATOR_RATIONALES.labels(teacher=teacher, outcome=outcome).inc(n)


def observe_train(summary: dict[str, Any], tally: m.TaskTally) -> None:
    """Steps, tokens, throughput, loss and peak memory, from the training summary."""
    if not summary or tally.moved(m.TRAINER_STEPS):
        return
    steps = int(summary.get("steps", 0)) - int(summary.get("resumed_from", 0))
    tps = float(summary.get("tokens_per_s") or 0.0)
    m.TRAINER_STEPS.inc(max(0, steps))
    m.TRAINER_TOKENS.inc(max(0.0, tps * float(summary.get("wall_s") or 0.0)))
    m.TRAINER_TOKENS_PER_SECOND.set(tps)
    if summary.get("final_loss") is not None:
        m.TRAINER_LOSS.set(float(summary["final_loss"]))
    if summary.get("peak_memory_bytes") is not None:
        m.TRAINER_PEAK_MEMORY.set(float(summary["peak_memory_bytes"]))


def observe_evaluate(grid: str, cell: str, metrics: dict[str, Any], tally: m.TaskTally) -> None:
    """The cell's accuracy (always), and tokens/predictions unless the evaluator counted them live."""
    if metrics.get("accuracy") is not None:
        m.set_cell_result(grid, cell, float(metrics["accuracy"]), metrics.get("extraction_failure_rate"))
    n = int(metrics.get("n") or 0)
    if not tally.moved(m.EVALUATOR_TOKENS):
        m.EVALUATOR_TOKENS.inc(max(0.0, float(metrics.get("mean_output_tokens") or 0.0) * n))
        if metrics.get("tokens_per_s") is not None:
            m.EVALUATOR_TOKENS_PER_SECOND.set(float(metrics["tokens_per_s"]))
    if not tally.moved(m.EVALUATOR_PREDICTIONS) and n:
        unparsed = round(float(metrics.get("extraction_failure_rate") or 0.0) * n)
        correct = round(float(metrics.get("accuracy") or 0.0) * n)
        m.EVALUATOR_PREDICTIONS.labels(outcome="correct").inc(correct)
        m.EVALUATOR_PREDICTIONS.labels(outcome="unparsed").inc(unparsed)
        m.EVALUATOR_PREDICTIONS.labels(outcome="incorrect").inc(max(0, n - correct - unparsed))
