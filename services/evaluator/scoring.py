"""The scores of graded rows, the same for `cotd evaluate` and `cotd evaluate --predictions`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.answers import strict_summary
from shared.stats import wilson_interval


def score_summary(rows: list[dict]) -> dict[str, Any]:
    """Accuracy with its Wilson 95% interval, counts, extraction failures, grading timeouts, rules, strict scores."""
    n = len(rows)
    k = sum(bool(r["correct"]) for r in rows)
    lo, hi = wilson_interval(k, n)
    return {
        "accuracy": k / n if n else 0.0,
        "ci_low": lo,
        "ci_high": hi,
        "n": n,
        "correct": k,
        "extraction_failure_rate": sum(r["extracted"] is None for r in rows) / n if n else 0.0,
        "grading_timeouts": sum(bool(r.get("grading_timeout", False)) for r in rows),
        "rules": dict(Counter(r["rule"] for r in rows).most_common()),
        **strict_summary(rows),
    }
