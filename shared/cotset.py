"""CoT set records and files: `cot.jsonl` (one record per question) plus `manifest.json`."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class CotRecord(BaseModel):
    """One teacher rationale. A failed item keeps its error; an unparsed reply keeps its raw text."""

    model_config = ConfigDict(extra="ignore")

    id: str
    question: str
    rationale: str | None = None
    answer: str | None = None
    gold: str | None = None
    parsed: bool = False
    correct: bool | None = None
    error: str | None = None
    kept: bool = True  # False when the filter policy (keep-correct) or a failure leaves it out of training


COT_FILE = "cot.jsonl"


def write_records(path: Path, records: list[CotRecord]) -> None:
    """Write records as JSONL."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.model_dump_json() + "\n")


def read_training_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(question, rationale) pairs from a CoT set dir, a cot.jsonl, or an alpaca JSON/JSONL file.

    Raises ValueError naming the file and the item for malformed input.
    """
    p = Path(path)
    if p.is_dir():
        p = p / COT_FILE
    if not p.exists():
        raise ValueError(f"{p}: no such CoT file")
    text = p.read_text(encoding="utf-8")
    items: list[dict]
    try:
        if p.suffix == ".jsonl":
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            items = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(items, list):
        raise ValueError(f"{p}: expected a list of records")
    pairs = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise ValueError(f"{p}: item {i}: not an object")
        if it.get("error") or it.get("kept") is False:
            continue
        q = it.get("question", it.get("instruction"))
        r = it.get("rationale", it.get("output"))
        if not isinstance(q, str) or not isinstance(r, str):
            raise ValueError(f"{p}: item {i}: needs string fields question/instruction and rationale/output")
        if r.strip():
            pairs.append((q, r))
    return pairs
