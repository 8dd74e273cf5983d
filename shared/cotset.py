"""CoT set records and files: `cot.jsonl` (one record per question) plus `manifest.json`.

Rationale files are read here too (pure parsing); accepted items, the first matching fields winning:

- a CoT set record (``cot.jsonl``): ``id``, ``question``, ``rationale`` (and ``error``, ``kept``);
- alpaca: ``instruction`` (+ optional ``input``) and ``output``;
- the paper's MATH files: ``problem`` and ``<teacher>_output`` (``output`` there is the gold answer).

A malformed item raises `DatasetError` naming the file and the item (``index 3`` / ``line 7``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from shared.datasets.base import DatasetError, normalize_text, question_id
from shared.datasets.files import Record, read_records


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
    extracted_strict: str | None = None  # the paper's strict reading of the answer (None: unparsed)
    correct_strict: bool | None = None  # the paper's verdict; None when gold is unknown
    error: str | None = None
    kept: bool = True  # False when the filter policy (keep-correct) or a failure leaves it out of training


COT_FILE = "cot.jsonl"


def write_records(path: Path, records: list[CotRecord]) -> None:
    """Write records as JSONL."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.model_dump_json() + "\n")


_QUESTION_FIELDS = ("instruction", "question", "problem")


def rationale_field(rec: Record, column: str | None = None) -> str:
    """The field holding the rationale: `column`, else a ``<teacher>_output``, else ``rationale``/``output``."""
    if column:
        return column
    teacher_cols = [k for k in rec.data if k.endswith("_output")]
    if len(teacher_cols) == 1:
        return teacher_cols[0]
    if len(teacher_cols) > 1:
        raise rec.error(f"several rationale fields ({', '.join(sorted(teacher_cols))}); name one")
    return "rationale" if "rationale" in rec.data and "output" not in rec.data else "output"


def parse_item(rec: Record, dataset: str, column: str | None = None) -> CotRecord:
    """One item as a CotRecord (id from the dataset name and normalised question text)."""
    qfield = next((f for f in _QUESTION_FIELDS if f in rec.data), None)
    if qfield is None:
        raise rec.error(f"needs a question field ({'/'.join(_QUESTION_FIELDS)})")
    q = rec.data[qfield]
    if not isinstance(q, str) or not q.strip():
        raise rec.error(f"field '{qfield}' must be a non-empty string")
    extra = rec.data.get("input")
    if qfield == "instruction" and isinstance(extra, str) and extra.strip():
        q = f"{q}\n{extra}"
    if rec.data.get("error"):
        return CotRecord(
            id=str(rec.data.get("id") or question_id(dataset, q)),
            question=normalize_text(q),
            error=str(rec.data["error"]),
        )
    rfield = rationale_field(rec, column)
    r = rec.data.get(rfield)
    if not isinstance(r, str):
        got = "missing" if r is None else f"a {type(r).__name__}"
        raise rec.error(f"field '{rfield}' (the rationale) must be a string, got {got}")
    rid = rec.data.get("id") if "rationale" in rec.data and isinstance(rec.data.get("id"), str) else None
    return CotRecord(id=rid or question_id(dataset, q), question=normalize_text(q), rationale=r.strip())


def read_cot_file(path: str | Path, dataset: str, column: str | None = None) -> list[CotRecord]:
    """Every item of a rationale file (or CoT set folder) as CotRecords, in file order."""
    p = Path(path)
    if p.is_dir():
        p = p / COT_FILE
    if not p.exists():
        raise DatasetError(f"{p}: no such file")
    return [parse_item(rec, dataset, column) for rec in read_records(p)]


def read_training_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(question, rationale) pairs from a CoT set folder, a cot.jsonl, or any rationale file.

    Records that failed or that the filter policy left out (`kept: false`) are skipped.
    A malformed item raises `DatasetError` naming the file and the item.
    """
    p = Path(path)
    if p.is_dir():
        p = p / COT_FILE
    if not p.exists():
        raise DatasetError(f"{p}: no such CoT file")
    pairs = []
    for rec in read_records(p):
        if rec.data.get("kept") is False:
            continue
        r = parse_item(rec, "cot")
        if r.error is None and r.rationale:
            pairs.append((r.question, r.rationale))
    return pairs
