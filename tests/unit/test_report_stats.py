"""Pure statistics of the report against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.report.recommend import level_pattern
from shared.report.stats import (
    discordant_counts,
    mcnemar_exact,
    paired_bootstrap,
    pearson,
    seed_summary,
    spearman,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 9, 2 * (1 + 10) / 2**10),  # 0.021484375
        (9, 1, 0.021484375),
        (0, 8, 2 / 2**8),
        (6, 0, 2 / 2**6),
        (2, 1, 1.0),  # 2 * (1 + 3) / 8 = 1.0
        (5, 5, 1.0),
        (0, 0, 1.0),
        (3, 10, 2 * (1 + 13 + 78 + 286) / 2**13),
    ],
)
def test_mcnemar_exact_hand_computed(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_value_named_in_the_brief() -> None:
    assert mcnemar_exact(1, 9) == pytest.approx(0.021484375, abs=1e-15)


def test_mcnemar_large_n_matches_exact_sum() -> None:
    b, c = 480, 560
    n = b + c
    exact = 2 * sum(math.comb(n, i) for i in range(b + 1)) / 2**n
    assert mcnemar_exact(b, c) == pytest.approx(exact, rel=1e-9)
    assert mcnemar_exact(700, 700) == pytest.approx(1.0)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_discordant_counts() -> None:
    a = [True, True, False, False, True]
    b = [True, False, True, False, False]
    assert discordant_counts(a, b) == (2, 1)


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # Wilson score interval, z = 1.96, worked by hand to 5 decimals
        (0, 10, 0.0, 0.27754),
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72247, 1.0),
        (81, 263, 0.25529, 0.36621),  # p=.30798: centre .310744, half .05546
        (16, 20, 0.58398, 0.91931),
    ],
)
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-5)
    assert got[1] == pytest.approx(hi, abs=5e-5)


def test_wilson_empty_and_invalid() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_paired_bootstrap_is_deterministic_and_sensible() -> None:
    rng = np.random.default_rng(7)
    a = list(rng.random(200) < 0.7)
    b = list(rng.random(200) < 0.5)
    r1 = paired_bootstrap(a, b, resamples=1000, seed=3)
    r2 = paired_bootstrap(a, b, resamples=1000, seed=3)
    r3 = paired_bootstrap(a, b, resamples=1000, seed=4)
    assert r1 == r2
    assert r1 != r3
    assert r1.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert r1.ci_low < r1.diff < r1.ci_high
    assert 0.0 <= r1.p_value <= 1.0
    assert r1.n == 200


def test_paired_bootstrap_matches_index_resampling() -> None:
    rng = np.random.default_rng(11)
    a = rng.random(300) < 0.6
    b = rng.random(300) < 0.5
    got = paired_bootstrap(list(a), list(b), resamples=4000, seed=1)
    d = a.astype(float) - b.astype(float)
    naive = d[rng.integers(0, len(d), size=(4000, len(d)))].mean(axis=1)
    lo, hi = np.quantile(naive, [0.025, 0.975])
    assert got.ci_low == pytest.approx(lo, abs=0.01)
    assert got.ci_high == pytest.approx(hi, abs=0.01)


def test_paired_bootstrap_identical_and_dominating() -> None:
    a = [True, False] * 20
    same = paired_bootstrap(a, a, resamples=500, seed=0)
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    better = paired_bootstrap([True] * 40, [False] * 40, resamples=500, seed=0)
    assert better.diff == 1.0 and better.p_value == 0.0
    assert paired_bootstrap([], [], resamples=10).n == 0
    with pytest.raises(ValueError):
        paired_bootstrap([True], [True, False])


def test_seed_summary() -> None:
    s = seed_summary([0.5, 0.7, 0.6])
    assert s.mean == pytest.approx(0.6)
    assert s.sd == pytest.approx(0.1)
    assert (s.min, s.max, s.count) == (0.5, 0.7, 3)
    assert seed_summary([0.4]).sd == 0.0
    with pytest.raises(ValueError):
        seed_summary([])


def test_correlations_against_numpy() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0]
    assert pearson(x, y) == pytest.approx(float(np.corrcoef(x, y)[0, 1]))
    # ranks of y: 2,1,4,3,5 -> Pearson on ranks
    assert spearman(x, y) == pytest.approx(float(np.corrcoef([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])[0, 1]))
    assert spearman([1, 2, 3, 4], [10, 20, 20, 40]) == pytest.approx(
        float(np.corrcoef([1, 2, 3, 4], [1, 2.5, 2.5, 4])[0, 1])
    )
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)
    assert pearson([1, 2], [3, 4]) is None
    assert pearson([1, 1, 1], [1, 2, 3]) is None


@pytest.mark.parametrize(
    ("accs", "pattern", "non_mono", "peak", "dip"),
    [
        ([0.4, 0.8, 0.5, 0.45], "rises then falls (peak at L2)", True, 2, None),
        ([0.8, 0.4, 0.5, 0.9], "falls then rises (dip at L2)", True, None, 2),
        ([0.1, 0.2, 0.3, 0.4], "increasing", False, None, None),
        ([0.4, 0.3, 0.3, 0.1], "decreasing", False, None, None),
        ([0.5, 0.5, 0.5, 0.5], "flat", False, None, None),
        ([0.1, 0.5, 0.2, 0.6], "non-monotonic (2 changes of direction)", True, None, None),
    ],
)
def test_level_pattern(
    accs: list[float], pattern: str, non_mono: bool, peak: int | None, dip: int | None
) -> None:
    got = level_pattern([1, 2, 3, 4], accs)
    assert got["pattern"] == pattern
    assert got["non_monotonic"] is non_mono
    assert got["peak_level"] == peak
    assert got["dip_level"] == dip
