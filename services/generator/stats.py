"""CoT set statistics (pure functions): parse rate, teacher accuracy, length, steps, diversity.

Tokens are counted with the teacher's tokenizer when one loads (a local path, or a hub id already
in the local cache: nothing is downloaded for statistics). Otherwise `fallback_tokens` counts
word runs and single punctuation marks, never whitespace (``"3+4=7."`` is 6 tokens); the manifest
names which counter was used (``tokenizer``: the model id, or ``regex-fallback``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from shared.cotset import CotRecord

_TOKEN = re.compile(r"\w+|[^\w\s]")
FALLBACK_TOKENIZER = "regex-fallback"
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
        grams = list(zip(*(w[i:] for i in range(n)), strict=False))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _p90(xs: list[int]) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return float(s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)])


def cot_stats(records: list[CotRecord], count_tokens: Callable[[str], int] | None = None) -> dict:
    """Statistics of a CoT set; teacher_accuracy is None when no record has gold.

    `teacher_accuracy` is our flexible scoring, `teacher_accuracy_strict` the paper's (None when the
    dataset has no strict rule); an unparsed answer is wrong in both. `mean_words_parsed` leaves out
    replies without "The answer is X" (a small teacher's loops until its token budget), so it
    measures the length of the rationales a keep-correct set can train on.
    """
    ok = [r for r in records if r.error is None and r.rationale]
    texts = [r.rationale or "" for r in ok]
    words = [len(t.split()) for t in texts]
    graded = [r for r in ok if r.gold is not None]
    parsed = [w for w, r in zip(words, ok, strict=True) if r.parsed]
    stats = {
        "items": len(records),
        "failed": sum(r.error is not None for r in records),
        "kept": sum(r.kept for r in records),
        "answer_parsed_rate": sum(r.parsed for r in ok) / len(ok) if ok else 0.0,
        "teacher_accuracy": sum(bool(r.correct) for r in graded) / len(graded) if graded else None,
        "teacher_accuracy_strict": (
            sum(bool(r.correct_strict) for r in graded) / len(graded)
            if graded and all(r.correct_strict is not None for r in graded)
            else None
        ),
        "mean_words": sum(words) / len(words) if words else 0.0,
        "mean_words_parsed": sum(parsed) / len(parsed) if parsed else None,
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


def fallback_tokens(text: str) -> int:
    """Tokens without a tokenizer: runs of word characters plus each punctuation mark."""
    return len(_TOKEN.findall(text))


def tokenizer_counter(tokenizer) -> Callable[[str], int]:
    """A token counter over a transformers tokenizer (no special tokens)."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def token_counter(model: str | None, revision: str | None = None) -> tuple[Callable[[str], int], str]:
    """(counter, name): the model's tokenizer if it loads without a download, else the fallback."""
    if model:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(model, revision=revision, local_files_only=True)
            return tokenizer_counter(tok), model
        except Exception:  # not local, not cached, or not a tokenizer: use the fallback
            pass
    return fallback_tokens, FALLBACK_TOKENIZER


def file_stats(
    path: str | Path,
    dataset: str,
    gold: str | Path | None = None,
    tokenizer: str | None = None,
    column: str | None = None,
) -> dict:
    """`cot_stats` of a CoT file (CoT set, paper file or alpaca), graded against a gold file if given.

    The gold file may be any file the dataset's loader reads (the paper's answer-only files too);
    records are joined to it by question id (normalised question text). Without gold,
    ``teacher_accuracy`` is None. ``graded`` counts the records that found their gold answer.
    """
    from services.generator.grading import grade_records
    from shared.cotset import read_cot_file
    from shared.datasets.registry import canonical_name, load_questions, task_type

    name = canonical_name(dataset)
    records = read_cot_file(path, name, column)
    questions = load_questions(name, "train", data_file=gold, skip_invalid=True) if gold else []
    graded = grade_records(records, questions, "keep-all", task_type(name))
    count, tok_name = (None, None)
    if tokenizer:
        from transformers import AutoTokenizer

        count, tok_name = tokenizer_counter(AutoTokenizer.from_pretrained(tokenizer)), tokenizer
    out = cot_stats(graded, count)
    out["graded"] = sum(r.correct is not None for r in graded)
    out["tokenizer"] = tok_name
    return out
