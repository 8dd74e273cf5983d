"""Answer extraction and grading, by task type. Pure functions.

- `extract_answer(text, task, choices)` finds the final answer in a rationale or a model output and
  records which rule fired (`Extraction.rule`): the LAST "The answer is" first, then fallbacks.
- `is_correct(pred, gold, task)` grades one extracted answer against a gold answer.
- `grade_many(preds, golds, task)` grades a batch; MATH items that need sympy run in a process pool
  with a per-item timeout, and an item that times out is graded None (counted, never a crash).

The paper's strict scoring (its regex for commonsense, MAmmoTH's `answer_clean` for math) lives in
`shared.answers_strict` and is re-exported here: `strict_extract`, `strict_correct`, `strict_fields`.

MATH equivalence lives in `shared.math_grading` (LaTeX normalisation, a small LaTeX->sympy
converter, intervals/tuples/matrices); it is re-exported here as `math_equivalent`.
"""

from __future__ import annotations

import re
from fractions import Fraction

from pydantic import BaseModel

from shared.answers_strict import strict_correct, strict_extract, strict_fields, strict_summary
from shared.datasets.base import LETTERS, TaskType
from shared.math_grading import (
    GradingTimeout,
    extract_math_answer,
    grade_math_many,
    math_equivalent,
    normalize_math,
)

__all__ = [
    "Extraction",
    "canonical_choice",
    "canonical_number",
    "canonical_yesno",
    "extract_answer",
    "grade_many",
    "is_correct",
    "math_equivalent",
    "normalize_math",
    "parse_number",
    "strict_correct",
    "strict_extract",
    "strict_fields",
    "strict_summary",
]

_ANSWER_IS = re.compile(r"answer\s*is(?-i:(?![a-z]))\s*[:：]?", re.I)
# filler between "the answer is" and the answer itself
_FILLER = re.compile(
    r"^(?:\s|[*_`\"':：]|-(?![\d.])|<answer>|\b(?:therefore|thus|hence|then|clearly|simply|option|choice|answer|is)\b)+",
    re.I,
)
# A number: optional sign and currency, thousands groups, decimals, an optional fraction part.
_NUM = (
    r"(?<![\w.])[-−–]?\s?\$?\s?"
    r"(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?"
    r"(?:\s?/\s?\d+(?:\.\d+)?)?"
    r"(?:\s?%)?"
)
_NUMBER = re.compile(_NUM)
_HASHES = re.compile(r"####\s*(.+)")
_BOXED_SIMPLE = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_TRUE_WORDS = {"true", "yes", "correct", "1"}
_FALSE_WORDS = {"false", "no", "incorrect", "0"}


class Extraction(BaseModel):
    """What was extracted from a model output, and which rule fired (`none` when nothing did)."""

    value: str | None
    rule: str


# --- numbers -----------------------------------------------------------------------------------


def parse_number(text: str) -> float | None:
    """Parse one number written with commas, `$`, `%`, a fraction or a unicode minus; else None."""
    s = text.strip().rstrip(".").strip()
    s = s.replace("−", "-").replace("–", "-").replace("$", "").replace("%", "").replace(" ", "")
    s = s.replace("\\!", "").replace("\\,", "")
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if m:
        s = f"{m.group(1)}/{m.group(2)}"
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            value = float(Fraction(num)) / float(Fraction(den))
        else:
            value = float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def canonical_number(value: float | str) -> str | None:
    """A canonical string for a number: integers without decimals, others rounded to 6 places."""
    v = parse_number(value) if isinstance(value, str) else float(value)
    if v is None:
        return None
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    return format(round(v, 6), "f").rstrip("0").rstrip(".")


def _numbers_in(text: str) -> list[str]:
    return [m.group(0) for m in _NUMBER.finditer(text) if re.search(r"\d", m.group(0))]


def _extract_number(text: str) -> Extraction:
    tail = _answer_tail(text)
    if tail is not None:
        nums = _numbers_in(tail[:200])
        if nums:
            value = canonical_number(nums[0])
            if value is not None:
                return Extraction(value=value, rule="answer_is")
    boxed = _BOXED_SIMPLE.findall(text)
    if boxed:
        value = canonical_number(boxed[-1]) or _first_canonical(boxed[-1])
        if value is not None:
            return Extraction(value=value, rule="boxed")
    hashes = _HASHES.findall(text)
    if hashes:
        value = _first_canonical(hashes[-1])
        if value is not None:
            return Extraction(value=value, rule="hashes")
    nums = _numbers_in(text)
    for raw in reversed(nums):
        value = canonical_number(raw)
        if value is not None:
            return Extraction(value=value, rule="last_number")
    return Extraction(value=None, rule="none")


def _first_canonical(text: str) -> str | None:
    for raw in _numbers_in(text):
        value = canonical_number(raw)
        if value is not None:
            return value
    return None


# --- multiple choice ----------------------------------------------------------------------------


def canonical_choice(text: str, choices: list[str] | None = None) -> str | None:
    """The letter A-E that `text` denotes: a bare letter, ``(B)``, ``B)``, ``B:`` or an option's text."""
    s = re.sub(r"[\s\"'`*.:]+$", "", _FILLER.sub("", text.strip()))
    letters = LETTERS[: len(choices)] if choices else LETTERS
    m = re.fullmatch(rf"\(?\s*([{letters}{letters.lower()}])\s*\)?[.:]?", s)
    if m:
        return m.group(1).upper()
    if choices:
        key = _norm_option(s).replace(" ", "")
        for i, c in enumerate(choices):
            if key and key == _norm_option(c).replace(" ", ""):
                return LETTERS[i]
    return None


def _norm_option(s: str) -> str:
    return re.sub(r"[^\w%√]+", " ", s.lower()).strip()


def _extract_choice(text: str, choices: list[str] | None) -> Extraction:
    letters = LETTERS[: len(choices)] if choices else LETTERS
    tail = _answer_tail(text)
    if tail is not None:
        t = tail
        m = re.match(rf"[(<\[]?([{letters}])(?![A-Za-z])", t) or re.match(
            rf"[(<\[]?([{letters.lower()}])(?=\s*$|[.)\]>,;:])", t
        )
        if m:
            return Extraction(value=m.group(1).upper(), rule="answer_is")
        letter = _option_text_in(t, choices)
        if letter:
            return Extraction(value=letter, rule="answer_is_text")
    whole = canonical_choice(text, choices)
    if whole:
        return Extraction(value=whole, rule="whole")
    pats = [
        (
            "letter_phrase",
            rf"(?:\b(?:answer|option|choice)\s*(?:is|:|-|=)?|\bis)\s*\(?([{letters}])(?![A-Za-z])",
        ),
        ("letter_paren", rf"\(([{letters}])\)"),
        ("leading_letter", rf"^\s*[(<\[]?([{letters}])(?![A-Za-z])"),
        ("last_letter", rf"(?<![A-Za-z'])([{letters}])(?![A-Za-z'])(?!\s+[a-z])"),
    ]
    for rule, pat in pats:
        found = re.findall(pat, text, flags=re.I if rule == "letter_phrase" else 0)
        found = [f for f in found if f.isupper()]
        if found:
            return Extraction(value=found[-1], rule=rule)
    letter = _last_option_text(text, choices)
    if letter:
        return Extraction(value=letter, rule="last_option_text")
    return Extraction(value=None, rule="none")


def _option_text_in(tail: str, choices: list[str] | None) -> str | None:
    """The option whose text the tail states (exact first, then the longest one it contains)."""
    if not choices:
        return None
    first = re.split(r"[.\n]\s", tail + " ", maxsplit=1)[0]
    key = _norm_option(first)
    if not key:
        return None
    norm = [_norm_option(c) for c in choices]
    for i, c in enumerate(norm):
        if c and c.replace(" ", "") == key.replace(" ", ""):
            return LETTERS[i]
    contained = [(len(c), i) for i, c in enumerate(norm) if c and re.search(rf"\b{re.escape(c)}\b", key)]
    if contained:
        return LETTERS[max(contained)[1]]
    return None


def _last_option_text(text: str, choices: list[str] | None) -> str | None:
    """The option whose text is mentioned last in `text` (ties: the longer text)."""
    if not choices:
        return None
    low = text.lower()
    best: tuple[int, int, int] | None = None
    for i, c in enumerate(choices):
        c = c.strip().lower()
        if not c:
            continue
        hits = [m.start() for m in re.finditer(rf"(?<!\w){re.escape(c)}(?!\w)", low)]
        if hits and (best is None or (hits[-1], len(c)) > best[:2]):
            best = (hits[-1], len(c), i)
    return LETTERS[best[2]] if best else None


# --- yes / no -----------------------------------------------------------------------------------


def canonical_yesno(text: str | bool) -> str | None:
    """``"True"`` / ``"False"`` for true/false/yes/no (any case, trailing punctuation), else None."""
    if isinstance(text, bool):
        return "True" if text else "False"
    w = re.sub(r"[^a-z0-9]", "", text.strip().lower())
    if w in _TRUE_WORDS:
        return "True"
    if w in _FALSE_WORDS:
        return "False"
    return None


def _extract_yesno(text: str) -> Extraction:
    tail = _answer_tail(text)
    if tail is not None:
        m = re.match(r"[\s*_`\"'(]*(true|false|yes|no)\b", tail, flags=re.I)
        if m:
            return Extraction(value=canonical_yesno(m.group(1)), rule="answer_is")
    whole = canonical_yesno(text)
    if whole and not text.strip().isdigit():
        return Extraction(value=whole, rule="whole")
    m = re.match(r"\s*(true|false|yes|no)\b", text, flags=re.I)
    if m:
        return Extraction(value=canonical_yesno(m.group(1)), rule="leading")
    found = re.findall(r"\b(true|false)\b", text, flags=re.I)
    if found:
        return Extraction(value=canonical_yesno(found[-1]), rule="last_truefalse")
    return Extraction(value=None, rule="none")


# --- public API ---------------------------------------------------------------------------------


def _answer_tail(text: str) -> str | None:
    """The text after the LAST "answer is" (case-insensitive), or None."""
    last = None
    for last in _ANSWER_IS.finditer(text):  # noqa: B007 - we want the last match
        pass
    return _FILLER.sub("", text[last.end() :]) if last is not None else None


def extract_answer(text: str, task: TaskType, choices: list[str] | None = None) -> Extraction:
    """Extract the final answer from a rationale or model output.

    Values are canonical: numbers as `canonical_number`, letters ``A``-``E``, ``True``/``False``,
    MATH answers as the raw LaTeX of the last ``\\boxed{}`` / "The answer is" (graded later).
    """
    if text is None:
        return Extraction(value=None, rule="none")
    task = TaskType(task)
    if task is TaskType.NUMBER:
        return _extract_number(text)
    if task is TaskType.CHOICE:
        return _extract_choice(text, choices)
    if task is TaskType.YESNO:
        return _extract_yesno(text)
    value, rule = extract_math_answer(text)
    return Extraction(value=value, rule=rule)


def canonical_gold(gold: str, task: TaskType, choices: list[str] | None = None) -> str:
    """A gold answer in the canonical form `extract_answer` produces (unchanged when unparseable)."""
    task = TaskType(task)
    g = str(gold).strip()
    if task is TaskType.NUMBER:
        return canonical_number(g) or g
    if task is TaskType.CHOICE:
        return canonical_choice(g, choices) or g
    if task is TaskType.YESNO:
        return canonical_yesno(g) or g
    return g


def is_correct(pred: str | None, gold: str, task: TaskType) -> bool:
    """Grade one extracted answer against gold (a MATH grading that times out counts as wrong)."""
    if pred is None:
        return False
    task = TaskType(task)
    if task is TaskType.NUMBER:
        p, g = parse_number(pred), parse_number(str(gold))
        if p is None or g is None:
            return pred.strip() == str(gold).strip()
        return abs(p - g) <= 1e-6 * max(1.0, abs(g))
    if task is TaskType.CHOICE:
        p, g = canonical_choice(pred), canonical_choice(str(gold))
        return p is not None and p == g
    if task is TaskType.YESNO:
        p, g = canonical_yesno(pred), canonical_yesno(str(gold))
        return p is not None and p == g
    try:
        return math_equivalent(pred, str(gold), timeout=5.0)
    except GradingTimeout:
        return False


def grade_many(
    preds: list[str | None],
    golds: list[str],
    task: TaskType,
    timeout: float = 5.0,
    max_workers: int | None = None,
) -> list[bool | None]:
    """Grade many answers; None marks an item whose grading timed out (MATH only)."""
    if len(preds) != len(golds):
        raise ValueError(f"grade_many: {len(preds)} predictions but {len(golds)} gold answers")
    task = TaskType(task)
    if task is TaskType.MATH:
        return grade_math_many(preds, [str(g) for g in golds], timeout=timeout, max_workers=max_workers)
    return [is_correct(p, g, task) for p, g in zip(preds, golds, strict=True)]
