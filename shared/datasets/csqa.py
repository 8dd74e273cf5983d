"""CommonsenseQA (hub `tau/commonsense_qa`; the paper tests on the 1221-item validation split).

Local files: the paper's evaluation file (``instruction`` with ``Answer Choices:\\nA. ...``,
``label``) or its alpaca files (``Q: ... Answer choices: A: x, B: y``). Hub rows are rendered in the
paper's training style (``qa``), so hub train questions share ids with the paper's CoT files.
"""

from __future__ import annotations

from pathlib import Path

from shared.datasets.base import LETTERS, Question, make_question, render_choices
from shared.datasets.files import Record, alpaca_question, hub_records, load_file
from shared.datasets.registry import DATASETS

NAME = "csqa"
TASK = DATASETS[NAME].task
HUB_ID = "tau/commonsense_qa"
SPLITS = {"test": "validation", "train": "train", "validation": "validation", "dev": "validation"}


def choices_from_hub(rec: Record) -> list[str]:
    """Option texts in letter order from a hub ``choices: {label: [...], text: [...]}`` field."""
    ch = rec.get("choices")
    if (
        not isinstance(ch, dict)
        or not isinstance(ch.get("text"), list)
        or not isinstance(ch.get("label"), list)
    ):
        raise rec.error("field 'choices': expected {'label': [...], 'text': [...]}")
    pairs = sorted(zip(ch["label"], ch["text"], strict=False))
    if [p[0] for p in pairs] != list(LETTERS[: len(pairs)]) or len(pairs) < 2:
        raise rec.error(f"field 'choices': labels must be A, B, ... in order, got {ch['label']!r}")
    return [str(t) for _, t in pairs]


def from_record(rec: Record) -> Question:
    """Parse one CommonsenseQA item (hub row, evaluation file or alpaca)."""
    if rec.has("choices") and rec.has("question"):
        choices = choices_from_hub(rec)
        gold = rec.text("answerKey").strip().upper()
        if gold not in LETTERS[: len(choices)]:
            raise rec.error(f"field 'answerKey': not an option letter: {gold!r}")
        text = render_choices(rec.text("question"), choices, "qa")
        return make_question(NAME, text, gold, TASK, choices)
    return alpaca_question(rec, NAME, TASK)


def load_from_file(path: str | Path, split: str = "test", skip_invalid: bool = False) -> list[Question]:
    """CommonsenseQA questions from a local file."""
    return load_file(path, from_record, skip_invalid)


def load_from_hub(split: str = "test") -> list[Question]:
    """CommonsenseQA from the hub; `test` means the labelled validation split, as in the paper."""
    return [from_record(r) for r in hub_records(HUB_ID, None, SPLITS.get(split, split))]
