"""Rationale lengths by level: the paper's, and how ours compare (pure functions).

The paper's prompts were not published, but its released files give the length each level should
have. `PAPER_MEAN_WORDS` holds the mean words per level of two of them (counted with ``str.split``
on the released files); `length_report` compares lengths measured with our prompts against them.
"""

from __future__ import annotations

from typing import Any

#: mean words per level (1..6) in the paper's released files (``str.split`` of every output; the
#: issue's rounded table says 35/39/50/58/69/81 and 28/48/70/80/114/125)
PAPER_MEAN_WORDS: dict[str, dict[int, float]] = {
    "svamp/gpt-4o": {1: 35.3, 2: 39.2, 3: 50.3, 4: 58.8, 5: 70.0, 6: 81.0},
    "strategyqa/llama-3-70b": {1: 28.1, 2: 48.3, 3: 70.2, 4: 80.3, 5: 114.3, 6: 125.3},
}
#: how far our L6/L1 ratio may be from the paper's (a factor, either way)
RATIO_TOLERANCE = 2.0


def paper_level_words() -> dict[int, float]:
    """The mean over `PAPER_MEAN_WORDS` of each level's words (for rationales not written yet)."""
    rows = list(PAPER_MEAN_WORDS.values())
    return {lv: sum(r[lv] for r in rows) / len(rows) for lv in rows[0]}


def length_report(measured: dict[int, float], paper: dict[int, float]) -> dict[str, Any]:
    """Level-by-level ratios to the paper, whether lengths strictly rise, and the L6/L1 check.

    `measured` and `paper` map level -> mean words; levels missing from either are left out.
    """
    levels = sorted(set(measured) & set(paper))
    words = [measured[lv] for lv in levels]
    rising = all(b > a for a, b in zip(words, words[1:], strict=False))
    out: dict[str, Any] = {
        "levels": levels,
        "mean_words": {lv: measured[lv] for lv in levels},
        "paper_mean_words": {lv: paper[lv] for lv in levels},
        "ratio_to_paper": {lv: measured[lv] / paper[lv] for lv in levels},
        "strictly_rising": rising,
    }
    first, last = (levels[0], levels[-1]) if levels else (None, None)
    if first is not None and last != first and measured[first] > 0:
        ours, theirs = measured[last] / measured[first], paper[last] / paper[first]
        out |= {
            "span": f"L{last}/L{first}",
            "span_ratio": ours,
            "paper_span_ratio": theirs,
            "span_within_tolerance": theirs / RATIO_TOLERANCE <= ours <= theirs * RATIO_TOLERANCE,
        }
    return out
