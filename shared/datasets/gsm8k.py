"""GSM8K: grade-school math (hub `openai/gsm8k`, config `main`).

Local files: the original JSONL (``question``, ``answer`` ending ``#### 72``) or the paper's alpaca
files. The human rationale is the ``answer`` text without the ``<<a*b=c>>`` calculator annotations,
ending "The answer is X".
"""

from __future__ import annotations

import re
from pathlib import Path

from shared.answers import canonical_number
from shared.datasets.base import Question, make_question
from shared.datasets.files import Record, alpaca_question, hub_records, load_file
from shared.datasets.registry import DATASETS

NAME = "gsm8k"
TASK = DATASETS[NAME].task
HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"

_CALC = re.compile(r"<<[^<>]*>>")


def from_record(rec: Record) -> Question:
    """Parse one GSM8K item (original / hub row, or alpaca)."""
    if rec.has("question") or (rec.has("answer") and not rec.has("instruction")):
        text, answer = rec.text("question"), rec.text("answer")
        if "####" not in answer:
            raise rec.error("field 'answer': no '#### <number>' final answer")
        body, final = answer.rsplit("####", 1)
        gold = canonical_number(final.strip())
        if gold is None:
            raise rec.error(f"field 'answer': not a number after '####': {final.strip()!r}")
        steps = _CALC.sub("", body).strip()
        rationale = f"{steps}\nThe answer is {gold}" if steps else None
        return make_question(NAME, text, gold, TASK, None, rationale)
    return alpaca_question(rec, NAME, TASK)


def load_from_file(path: str | Path, split: str = "test", skip_invalid: bool = False) -> list[Question]:
    """GSM8K questions from a local file."""
    return load_file(path, from_record, skip_invalid)


def load_from_hub(split: str = "test") -> list[Question]:
    """GSM8K questions from the hub (`train` or `test`)."""
    return [from_record(r) for r in hub_records(HUB_ID, HUB_CONFIG, split)]
