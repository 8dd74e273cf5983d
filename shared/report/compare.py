"""Paired comparisons between two conditions: McNemar's exact test and a paired bootstrap.

Items are paired by (seed, question id): only seeds both conditions ran, and only ids both scored.
With several seeds the discordant pairs are pooled over seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.report.cells import Cell, Condition, CondKey
from shared.report.stats import BootstrapResult, discordant_counts, mcnemar_exact, paired_bootstrap

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0

PredictionsLoader = Callable[[str], "list[dict] | None"]


@dataclass(frozen=True)
class Comparison:
    """A - B on paired items. ``p_value`` is None when no items could be paired."""

    a: CondKey
    b: CondKey
    accuracy_a: float  # mean over the seeds both ran (all of A's seeds when none is shared)
    accuracy_b: float
    common_seeds: tuple[str, ...]  # seeds both conditions ran
    seeds: tuple[str, ...]  # seeds whose items could be paired
    n_pairs: int
    only_a: int  # A right, B wrong
    only_b: int  # A wrong, B right
    p_value: float | None
    bootstrap: BootstrapResult | None
    reason: str | None = None

    @property
    def diff(self) -> float | None:
        """Mean over common seeds of the per-seed accuracy difference A - B; None without a common seed."""
        if not self.common_seeds:
            return None
        return self.accuracy_a - self.accuracy_b

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "accuracy_a": self.accuracy_a,
            "accuracy_b": self.accuracy_b,
            "diff": self.diff,
            "common_seeds": list(self.common_seeds),
            "paired_seeds": list(self.seeds),
            "n_pairs": self.n_pairs,
            "a_right_b_wrong": self.only_a,
            "a_wrong_b_right": self.only_b,
            "mcnemar_p": self.p_value,
            "significant": self.significant,
            "bootstrap": self.bootstrap.to_json() if self.bootstrap else None,
            "reason": self.reason,
        }


class Comparer:
    """Loads per-item outcomes lazily (once per evaluation) and memoises comparisons."""

    def __init__(self, predictions_loader: PredictionsLoader) -> None:
        self._loader = predictions_loader
        self._outcomes: dict[str, dict[str, bool] | None] = {}
        self._cache: dict[tuple[CondKey, CondKey], Comparison] = {}
        self.warnings: list[str] = []

    def outcomes(self, cell: Cell) -> dict[str, bool] | None:
        """Per-item correctness of one cell, keyed by question id; None when unavailable."""
        key = cell.eval_key
        if not key:
            return None
        if key not in self._outcomes:
            self._outcomes[key] = self._load(key)
        return self._outcomes[key]

    def _load(self, eval_key: str) -> dict[str, bool] | None:
        try:
            rows = self._loader(eval_key)
        except (OSError, ValueError) as exc:
            self.warnings.append(f"predictions of evaluation {eval_key} unreadable: {exc}")
            return None
        if rows is None:
            return None
        out: dict[str, bool] = {}
        for row in rows:
            if not isinstance(row, dict) or "id" not in row or "correct" not in row:
                self.warnings.append(f"predictions of evaluation {eval_key}: row without id/correct skipped")
                continue
            out[str(row["id"])] = bool(row["correct"])
        return out

    def compare(self, a: Condition, b: Condition) -> Comparison:
        """Paired McNemar and bootstrap of A against B (memoised)."""
        memo = self._cache.get((a.key, b.key))
        if memo is not None:
            return memo
        xs: list[bool] = []
        ys: list[bool] = []
        seeds: list[str] = []
        b_by_seed = {str(c.seed): c for c in b.cells}
        common = [c for c in a.cells if str(c.seed) in b_by_seed]
        if common:
            acc_a = sum(c.accuracy for c in common) / len(common)  # type: ignore[misc]
            acc_b = sum(b_by_seed[str(c.seed)].accuracy for c in common) / len(common)  # type: ignore[misc]
        else:
            acc_a, acc_b = a.accuracy, b.accuracy
        common_seeds = tuple(str(c.seed) for c in common)
        reason = None
        for ca in a.cells:
            cb = b_by_seed.get(str(ca.seed))
            if cb is None:
                continue
            oa, ob = self.outcomes(ca), self.outcomes(cb)
            if oa is None or ob is None:
                reason = "per-item predictions unavailable"
                continue
            ids = sorted(set(oa) & set(ob))
            if not ids:
                continue
            seeds.append(str(ca.seed))
            xs.extend(oa[i] for i in ids)
            ys.extend(ob[i] for i in ids)
        if not xs:
            reason = reason or ("no seed in common" if not common else "no question id in common")
            result = Comparison(a.key, b.key, acc_a, acc_b, common_seeds, (), 0, 0, 0, None, None, reason)
        else:
            only_a, only_b = discordant_counts(xs, ys)
            boot = paired_bootstrap(xs, ys, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
            result = Comparison(
                a.key,
                b.key,
                acc_a,
                acc_b,
                common_seeds,
                tuple(seeds),
                len(xs),
                only_a,
                only_b,
                mcnemar_exact(only_a, only_b),
                boot,
            )
        self._cache[(a.key, b.key)] = result
        return result

    def all_comparisons(self) -> list[Comparison]:
        """Every comparison made so far, in the order made."""
        return list(self._cache.values())
