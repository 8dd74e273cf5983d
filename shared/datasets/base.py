"""The common question model every dataset loader returns."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from shared.errors import CotdError


class TaskType(StrEnum):
    """How an answer is extracted and graded."""

    NUMBER = "number"  # SVAMP, GSM8K, arith
    CHOICE = "choice"  # AQuA, CommonsenseQA, OpenBookQA (letters A-E)
    YESNO = "yesno"  # StrategyQA (True/False)
    MATH = "math"  # MATH (LaTeX expressions, sympy equivalence)


class Question(BaseModel):
    """One question of a dataset split.

    `text` is the full prompt text (for multiple choice it includes the rendered options),
    normalised with `normalize_text`. `choices` holds the option texts in letter order.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    gold: str
    task: TaskType
    choices: list[str] | None = None
    rationale: str | None = None


_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Normalise question text the same way everywhere (NFKC, collapsed whitespace, stripped)."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def question_id(dataset: str, text: str) -> str:
    """A stable id from the dataset name and the normalised question text."""
    digest = hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()[:12]
    return f"{dataset}-{digest}"


def dataset_of(qid: str) -> str:
    """The dataset name inside a `question_id` (``"svamp-0a1b2c3d4e5f"`` -> ``"svamp"``)."""
    return qid.rsplit("-", 1)[0]


class DatasetError(CotdError, ValueError):
    """A dataset file or item is malformed; the message names the file and the item."""


# --- multiple-choice rendering and parsing -------------------------------------------------

LETTERS = "ABCDE"

_CHOICES_HEAD = re.compile(r"answer\s+choices\s*:", re.I)


def render_choices(question: str, choices: list[str], style: str) -> str:
    """Render a question and its options as prompt text, in one of the paper's three styles.

    - ``qa``: ``Q: <question> Answer choices: A: x, B: y`` (the paper's CSQA / OpenBookQA train files)
    - ``paren``: ``<question> Answer Choices: (A) x (B) y`` (the paper's AQuA files)
    - ``lines``: ``<question> Answer Choices:\\nA. x\\nB. y`` (the paper's CSQA evaluation file)
    """
    q = question.strip()
    if style == "qa":
        opts = ", ".join(f"{LETTERS[i]}: {c.strip()}" for i, c in enumerate(choices))
        return f"Q: {q} Answer choices: {opts}"
    if style == "paren":
        opts = " ".join(f"({LETTERS[i]}) {c.strip()}" for i, c in enumerate(choices))
        return f"{q} Answer Choices: {opts}"
    if style == "lines":
        opts = "\n".join(f"{LETTERS[i]}. {c.strip()}" for i, c in enumerate(choices))
        return f"{q} Answer Choices:\n{opts}\n"
    raise ValueError(f"unknown choice style {style!r}")


def parse_choices(text: str) -> list[str] | None:
    """The option texts of a rendered multiple-choice question (any style above), or None.

    Options are found in letter order after the last ``Answer choices:``; at least two are needed.
    """
    heads = list(_CHOICES_HEAD.finditer(text))
    if not heads:
        return None
    seg = text[heads[-1].end() :]
    starts: list[tuple[int, int]] = []  # (marker start, option text start)
    pos = 0
    for letter in LETTERS:
        m = re.compile(rf"(?:(?<=\s)|(?<=,)|^)\(?{letter}(?:\)|\.|:)\s*").search(seg, pos)
        if not m:
            break
        starts.append((m.start(), m.end()))
        pos = m.end()
    if len(starts) < 2:
        return None
    out = []
    for i, (_, begin) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(seg)
        out.append(seg[begin:end].strip().rstrip(",").strip())
    return out


def make_question(
    dataset: str,
    text: str,
    gold: str,
    task: TaskType,
    choices: list[str] | None = None,
    rationale: str | None = None,
) -> Question:
    """Build a `Question` with normalised text and its stable id."""
    norm = normalize_text(text)
    return Question(
        id=question_id(dataset, norm),
        text=norm,
        gold=gold,
        task=task,
        choices=[normalize_text(c) for c in choices] if choices else None,
        rationale=rationale.strip() if rationale and rationale.strip() else None,
    )
