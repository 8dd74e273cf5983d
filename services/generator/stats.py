"""CoT set statistics (pure functions): parse rate, teacher accuracy, length, steps, diversity."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from shared.cotset import CotRecord

_SENT = re.compile(r"(?<=[.!?])\s+|\n+")
_ANSWER = re.compile(r"The answer is", re.I)


def count_steps(rationale: str) -> int:
    """Reasoning steps: sentences or lines before the final "The answer is"."""
    body = _ANSWER.split(rationale)[0] if _ANSWER.search(rationale) else rationale
    return sum(1 for s in _SENT.split(body) if re.search(r"\w", s))


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of the texts (word level)."""
    total, seen = 0, set()
    for t in texts:
        w = t.split()
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _p90(xs: list[int]) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return float(s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)])


def cot_stats(records: list[CotRecord], count_tokens: Callable[[str], int] | None = None) -> dict:
    """Statistics of a CoT set; teacher_accuracy is None when no record has gold."""
    ok = [r for r in records if r.error is None and r.rationale]
    texts = [r.rationale or "" for r in ok]
    words = [len(t.split()) for t in texts]
    graded = [r for r in ok if r.gold is not None]
    stats = {
        "items": len(records),
        "failed": sum(r.error is not None for r in records),
        "kept": sum(r.kept for r in records),
        "answer_parsed_rate": sum(r.parsed for r in ok) / len(ok) if ok else 0.0,
        "teacher_accuracy": sum(bool(r.correct) for r in graded) / len(graded) if graded else None,
        "mean_words": sum(words) / len(words) if words else 0.0,
        "p90_words": _p90(words),
        "mean_steps": sum(count_steps(t) for t in texts) / len(texts) if texts else 0.0,
        "distinct_2": distinct_n(texts, 2),
        "mean_tokens": None,
        "p90_tokens": None,
    }
    if count_tokens is not None and texts:
        toks = [count_tokens(t) for t in texts]
        stats |= {"mean_tokens": sum(toks) / len(toks), "p90_tokens": _p90(toks)}
    return stats
