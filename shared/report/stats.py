"""Pure statistics for the report: intervals, paired tests, seed spread, correlations.

Every function here is deterministic and free of I/O. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from shared.stats import wilson_interval

__all__ = [
    "BootstrapResult",
    "SeedSummary",
    "discordant_counts",
    "mcnemar_exact",
    "paired_bootstrap",
    "pearson",
    "seed_summary",
    "spearman",
    "wilson_interval",
]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: binomial(b + c, 1/2) on the discordant pairs.

    ``b`` counts items right under A and wrong under B, ``c`` the reverse.
    Returns ``min(1, 2 * P[X <= min(b, c)])``; 1.0 when there are no discordant pairs.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    m = min(b, c)
    if n <= 1000:  # exact integer arithmetic
        tail = sum(math.comb(n, i) for i in range(m + 1))
        return min(1.0, 2 * tail / 2**n)
    # log-space sum for large n (still exact up to float rounding)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(m + 1)]
    top = max(logs)
    log_tail = top + math.log(sum(math.exp(v - top) for v in logs)) - n * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


def discordant_counts(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(#A right and B wrong, #A wrong and B right) over paired outcomes."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} vs {len(b)}")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return only_a, only_b


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of mean(A) - mean(B)."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    resamples: int
    seed: int

    def to_json(self) -> dict:
        return asdict(self)


def paired_bootstrap(
    a: Sequence[bool],
    b: Sequence[bool],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap of the accuracy difference A - B, resampling items with replacement.

    Only the discordant pairs move the difference, so the resampled counts are drawn from the equivalent
    multinomial instead of resampling indices.

    ``p_value`` is the two-sided fraction ``2 * min(P[d* <= 0], P[d* >= 0])`` capped at 1:
    how often a resampled difference falls on the other side of zero. Same inputs and seed
    give the same result.
    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} vs {len(b)}")
    n = len(a)
    if n == 0:
        return BootstrapResult(0.0, 0.0, 0.0, 1.0, 0, resamples, seed)
    only_a, only_b = discordant_counts(a, b)
    diff = (only_a - only_b) / n
    # Resampling n items with replacement only matters through how many discordant items of each kind
    # are drawn, which is multinomial: the same distribution as index resampling, in O(resamples).
    rng = np.random.default_rng(seed)
    p_a, p_b = only_a / n, only_b / n
    counts = rng.multinomial(n, [p_a, p_b, max(0.0, 1.0 - p_a - p_b)], size=resamples)
    means = (counts[:, 0] - counts[:, 1]) / n
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    p = min(1.0, 2.0 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return BootstrapResult(diff, float(lo), float(hi), p, n, resamples, seed)


@dataclass(frozen=True)
class SeedSummary:
    """Mean and spread of one quantity over seeds (sd is the sample sd, 0 for one seed)."""

    mean: float
    sd: float
    min: float
    max: float
    count: int

    def to_json(self) -> dict:
        return asdict(self)


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean, sample standard deviation, min and max of per-seed values."""
    if not values:
        raise ValueError("seed_summary needs at least one value")
    arr = np.asarray(values, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return SeedSummary(float(arr.mean()), sd, float(arr.min()), float(arr.max()), len(arr))


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 points or a constant input."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    if len(x) < 3:
        return None
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    xc, yc = xa - xa.mean(), ya - ya.mean()
    denom = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    if denom == 0.0:
        return None
    return max(-1.0, min(1.0, float((xc * yc).sum()) / denom))


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2.0 + 1.0
        for t in range(i, j + 1):
            ranks[order[t]] = avg
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on average ranks); None when undefined."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    if len(x) < 3:
        return None
    return pearson(_ranks(list(x)), _ranks(list(y)))
