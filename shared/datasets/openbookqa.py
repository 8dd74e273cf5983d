"""OpenBookQA (hub `allenai/openbookqa`, config `main`; 500 test questions, four options).

Local files: the paper's evaluation or alpaca files (``Q: ... Answer choices: A: x, B: y``). Hub rows
are rendered in the same style, so their ids match the paper's files.
"""

from __future__ import annotations

from pathlib import Path

from shared.datasets.base import LETTERS, Question, make_question, render_choices
from shared.datasets.csqa import choices_from_hub
from shared.datasets.files import Record, alpaca_question, hub_records, load_file
from shared.datasets.registry import DATASETS

NAME = "openbookqa"
TASK = DATASETS[NAME].task
HUB_ID, HUB_CONFIG = "allenai/openbookqa", "main"
SPLITS = {"test": "test", "train": "train", "validation": "validation", "dev": "validation"}


def from_record(rec: Record) -> Question:
    """Parse one OpenBookQA item (hub row, evaluation file or alpaca)."""
    if rec.has("choices") and rec.has("question_stem"):
        choices = choices_from_hub(rec)
        gold = rec.text("answerKey").strip().upper()
        if gold not in LETTERS[: len(choices)]:
            raise rec.error(f"field 'answerKey': not an option letter: {gold!r}")
        text = render_choices(rec.text("question_stem"), choices, "qa")
        return make_question(NAME, text, gold, TASK, choices)
    return alpaca_question(rec, NAME, TASK)


def load_from_file(path: str | Path, split: str = "test", skip_invalid: bool = False) -> list[Question]:
    """OpenBookQA questions from a local file."""
    return load_file(path, from_record, skip_invalid)


def load_from_hub(split: str = "test") -> list[Question]:
    """OpenBookQA from the hub (`train`, `validation` or `test`)."""
    return [from_record(r) for r in hub_records(HUB_ID, HUB_CONFIG, SPLITS.get(split, split))]
