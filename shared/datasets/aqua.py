"""AQuA-RAT: algebra word problems with five options (hub `deepmind/aqua_rat`, config `raw`).

Local files: the original JSONL (``question``, ``options`` like ``"A)21"``, ``rationale``,
``correct``) or the paper's alpaca files. The prompt renders the options as the paper's files do:
``<question> Answer Choices: (A) 21 (B) 22 ...``.
"""

from __future__ import annotations

import re
from pathlib import Path

from shared.datasets.base import LETTERS, Question, make_question, render_choices
from shared.datasets.files import Record, alpaca_question, hub_records, load_file
from shared.datasets.registry import DATASETS

NAME = "aqua"
TASK = DATASETS[NAME].task
HUB_ID, HUB_CONFIG = "deepmind/aqua_rat", "raw"
SPLITS = {"test": "test", "train": "train", "dev": "validation", "validation": "validation"}

_OPTION = re.compile(r"^\s*\(?([A-Ea-e])\s*[).:]\s*(.*)$", re.S)


def from_record(rec: Record) -> Question:
    """Parse one AQuA item (original / hub row, or alpaca)."""
    if rec.has("options"):
        question = rec.text("question")
        options = rec.get("options")
        if not isinstance(options, list) or len(options) < 2:
            raise rec.error("field 'options': expected a list of at least two options")
        choices = []
        for i, opt in enumerate(options):
            m = _OPTION.match(str(opt))
            if m and m.group(1).upper() != LETTERS[i]:
                raise rec.error(f"field 'options': option {i} is labelled {m.group(1)!r}")
            choices.append(m.group(2).strip() if m else str(opt).strip())
        correct = rec.text("correct").strip().upper()
        if correct not in LETTERS[: len(choices)]:
            raise rec.error(f"field 'correct': not an option letter: {correct!r}")
        rationale = None
        if rec.has("rationale") and rec.text("rationale", allow_empty=True).strip():
            rationale = f"{rec.text('rationale').strip()}\nThe answer is {correct}"
        text = render_choices(question, choices, "paren")
        return make_question(NAME, text, correct, TASK, choices, rationale)
    return alpaca_question(rec, NAME, TASK)


def load_from_file(path: str | Path, split: str = "test", skip_invalid: bool = False) -> list[Question]:
    """AQuA questions from a local file."""
    return load_file(path, from_record, skip_invalid)


def load_from_hub(split: str = "test") -> list[Question]:
    """AQuA questions from the hub (`train`, `dev`/`validation` or `test`)."""
    return [from_record(r) for r in hub_records(HUB_ID, HUB_CONFIG, SPLITS.get(split, split))]
