"""SVAMP: arithmetic word problems (hub `ChilleD/SVAMP`, 700 train / 300 test, the paper's split).

Local files: the raw SVAMP items (``Body``, ``Question``, ``Answer``, ``Equation``) or the paper's
alpaca files. The prompt text is ``Body + " " + Question`` as in the paper's files; the human
rationale is the paper's: ``"290.0 / 2.0 = 145.0. The answer is 145.0"``.
"""

from __future__ import annotations

from pathlib import Path

from shared.answers import canonical_number
from shared.datasets.base import Question, make_question
from shared.datasets.files import Record, alpaca_question, hub_records, load_file
from shared.datasets.registry import DATASETS

NAME = "svamp"
TASK = DATASETS[NAME].task
HUB_ID = "ChilleD/SVAMP"


def _strip_outer_parens(eq: str) -> str:
    eq = eq.strip()
    if eq.startswith("(") and eq.endswith(")"):
        depth = 0
        for i, c in enumerate(eq):
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and i < len(eq) - 1:
                return eq
        return eq[1:-1].strip()
    return eq


def from_record(rec: Record) -> Question:
    """Parse one SVAMP item (raw SVAMP / hub row, or alpaca)."""
    if rec.has("Body") or rec.has("Question"):
        body, q = rec.text("Body", allow_empty=True), rec.text("Question")
        answer = rec.get("Answer")
        gold = canonical_number(str(answer))
        if gold is None:
            raise rec.error(f"field 'Answer': not a number: {answer!r}")
        rationale = None
        if rec.has("Equation"):
            ans = str(float(gold)) if "." not in gold else gold
            rationale = f"{_strip_outer_parens(rec.text('Equation'))} = {ans}. The answer is {ans}"
        return make_question(NAME, f"{body.strip()} {q.strip()}", gold, TASK, None, rationale)
    return alpaca_question(rec, NAME, TASK)


def load_from_file(path: str | Path, split: str = "test", skip_invalid: bool = False) -> list[Question]:
    """SVAMP questions from a local file."""
    return load_file(path, from_record, skip_invalid)


def load_from_hub(split: str = "test") -> list[Question]:
    """SVAMP questions from the hub (`train` or `test`)."""
    return [from_record(r) for r in hub_records(HUB_ID, None, split)]
