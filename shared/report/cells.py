"""Cells of a results file, normalised and grouped into conditions (a condition = a cell minus its seed).

A *condition* is (dataset, teacher, teacher_kind, level, format, student); its cells differ only by seed.
Its accuracy is the mean over seeds; its interval is the cell's own interval for one seed, and the Wilson
interval of the pooled counts for several.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.report.stats import SeedSummary, seed_summary, wilson_interval

ANSWER_ONLY = "answer-only"
HUMAN = "human"
COT = "cot"

_ANSWER_ONLY_NAMES = {"answer-only", "answer_only", "answeronly", "only_ans", "onlyans"}
_HUMAN_NAMES = {"human"}


@dataclass(frozen=True, order=True)
class CondKey:
    """Everything that identifies a condition (all seeds of one grid point)."""

    dataset: str
    student: str
    role: str  # "answer-only", "human" or "cot"
    teacher: str
    teacher_kind: str
    level: int | None
    format: str | None

    def sort_key(self) -> tuple:
        return (
            self.dataset,
            self.student,
            self.role,
            self.teacher,
            self.teacher_kind,
            -1 if self.level is None else self.level,
            self.format or "",
        )

    def label(self) -> str:
        """Short human-readable name, e.g. ``gpt-4o L3 cot`` or ``answer-only``."""
        if self.role == ANSWER_ONLY:
            return ANSWER_ONLY
        if self.role == HUMAN:
            return HUMAN
        parts = [self.teacher]
        if self.level is not None:
            parts.append(f"L{self.level}")
        if self.format:
            parts.append(self.format)
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "student": self.student,
            "role": self.role,
            "teacher": self.teacher,
            "teacher_kind": self.teacher_kind,
            "level": self.level,
            "format": self.format,
            "label": self.label(),
        }


@dataclass
class Cell:
    """One results.json cell, validated; ``missing_reason`` is set when it cannot be used."""

    index: int
    raw: dict[str, Any]
    key: CondKey | None
    seed: Any
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    eval_key: str | None
    cot_key: str | None
    missing_reason: str | None = None
    accuracy_strict: float | None = None  # the paper's strict scoring; None when not reported

    @property
    def missing(self) -> bool:
        return self.missing_reason is not None

    @property
    def k(self) -> int:
        """Number of correct items implied by accuracy and n."""
        assert self.accuracy is not None and self.n is not None
        return int(round(self.accuracy * self.n))

    def describe(self) -> dict[str, Any]:
        """The identifying fields of the cell, for the missing-cells section."""
        fields = ("dataset", "teacher", "teacher_kind", "level", "format", "student", "seed", "status")
        out = {f: self.raw.get(f) for f in fields}
        out["reason"] = self.missing_reason
        if self.raw.get("error"):
            out["error"] = str(self.raw["error"])
        return out


def _role(teacher_kind: str, fmt: str | None) -> str:
    tk = teacher_kind.lower()
    f = (fmt or "").lower()
    if tk in _ANSWER_ONLY_NAMES or f in _ANSWER_ONLY_NAMES:
        return ANSWER_ONLY
    if tk in _HUMAN_NAMES or f in _HUMAN_NAMES:
        return HUMAN
    return COT


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _as_level(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def normalise_cell(index: int, raw: Any) -> Cell:
    """Validate one raw cell; never raises, a bad cell comes back with ``missing_reason`` set."""
    if not isinstance(raw, dict):
        return Cell(
            index,
            {"value": repr(raw)[:80]},
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            missing_reason="cell is not an object",
        )
    reasons: list[str] = []
    for name in ("dataset", "student"):
        if not raw.get(name):
            reasons.append(f"no {name}")
    teacher_kind = str(raw.get("teacher_kind") or "")
    fmt = raw.get("format")
    fmt = str(fmt) if fmt not in (None, "") else None
    role = _role(teacher_kind, fmt)
    level = _as_level(raw.get("level"))
    if role == COT and level is not None and fmt is None:
        fmt = COT  # a levelled rationale without a named format is plain steps
    if role != COT:
        level, fmt = None, None
    teacher = str(raw.get("teacher") or (role if role != COT else teacher_kind or "?"))
    key = None
    if not reasons:
        key = CondKey(
            str(raw["dataset"]),
            str(raw["student"]),
            role,
            teacher if role == COT else role,
            teacher_kind,
            level,
            fmt,
        )
    status = raw.get("status", "done")
    accuracy = _as_float(raw.get("accuracy"))
    n_val = _as_float(raw.get("n"))
    n = int(n_val) if n_val is not None and n_val >= 0 else None
    if status not in (None, "done"):
        reasons.append(f"status {status}")
    elif accuracy is None:
        reasons.append("no accuracy")
    elif not 0.0 <= accuracy <= 1.0:
        reasons.append(f"accuracy {accuracy} outside [0, 1]")
    elif n is None or n == 0:
        reasons.append("no item count n")
    return Cell(
        index=index,
        raw=raw,
        key=key,
        seed=raw.get("seed"),
        accuracy=accuracy,
        ci_low=_as_float(raw.get("ci_low")),
        ci_high=_as_float(raw.get("ci_high")),
        n=n,
        eval_key=raw.get("eval_key") or None,
        cot_key=raw.get("cot_key") or None,
        missing_reason="; ".join(reasons) if reasons else None,
        accuracy_strict=_as_float(raw.get("accuracy_strict")),
    )


@dataclass
class Condition:
    """All done cells of one condition, by seed."""

    key: CondKey
    cells: list[Cell] = field(default_factory=list)

    @property
    def seeds(self) -> list[Any]:
        return [c.seed for c in self.cells]

    @property
    def accuracies(self) -> list[float]:
        return [c.accuracy for c in self.cells]  # type: ignore[misc]

    @property
    def summary(self) -> SeedSummary:
        return seed_summary(self.accuracies)

    @property
    def accuracy(self) -> float:
        """Mean accuracy over seeds."""
        return self.summary.mean

    @property
    def accuracy_strict(self) -> float | None:
        """Mean over seeds of the paper's strict accuracy; None unless every seed reports it."""
        vals = [c.accuracy_strict for c in self.cells]
        if not vals or any(v is None for v in vals):
            return None
        return sum(vals) / len(vals)  # type: ignore[arg-type]

    @property
    def n(self) -> int:
        """Items scored, summed over seeds."""
        return sum(c.n for c in self.cells)  # type: ignore[misc]

    @property
    def k(self) -> int:
        return sum(c.k for c in self.cells)

    @property
    def ci(self) -> tuple[float, float]:
        """The cell's interval for one seed (Wilson if absent); Wilson on pooled counts otherwise."""
        if len(self.cells) == 1:
            c = self.cells[0]
            if c.ci_low is not None and c.ci_high is not None:
                return (c.ci_low, c.ci_high)
        return wilson_interval(self.k, self.n)

    @property
    def half_ci(self) -> float:
        lo, hi = self.ci
        return (hi - lo) / 2.0

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        lo, hi = self.ci
        return {
            **self.key.to_json(),
            "accuracy": s.mean,
            "accuracy_strict": self.accuracy_strict,
            "ci_low": lo,
            "ci_high": hi,
            "half_ci": (hi - lo) / 2.0,
            "n": self.n,
            "seeds": self.seeds,
            "seed_accuracies": self.accuracies,
            "seed_sd": s.sd,
        }


def group_conditions(cells: Iterable[Cell]) -> dict[CondKey, Condition]:
    """Group the usable cells into conditions; a second cell with the same seed is ignored."""
    out: dict[CondKey, Condition] = {}
    for cell in cells:
        if cell.missing or cell.key is None:
            continue
        cond = out.setdefault(cell.key, Condition(cell.key))
        if any(_same_seed(c.seed, cell.seed) for c in cond.cells):
            cell.missing_reason = "duplicate of another cell with the same seed"
            continue
        cond.cells.append(cell)
    for cond in out.values():
        cond.cells.sort(key=lambda c: str(c.seed))
    return dict(sorted(out.items(), key=lambda kv: kv[0].sort_key()))


def _same_seed(a: Any, b: Any) -> bool:
    return str(a) == str(b)
