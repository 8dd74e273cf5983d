"""Teachers that call no server: procedural (arith), answer-only, human, recorded files.

Each writer takes the signature of `shared.teacher_kinds`; `workdir` and `check` go unused (no server to resume
or wait for)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shared.cotset import CotRecord
from shared.datasets.base import DatasetError, Question
from shared.specs import CotSetSpec, recorded_path

Check = Callable[[], None]


def procedural_records(
    spec: CotSetSpec, questions: list[Question], workdir: Path | None = None, check: Check | None = None
) -> list[CotRecord]:
    """Exact arith rationales at the spec's level and format."""
    from services.generator.teachers.procedural import rationale
    from shared.datasets.arith import make_problems

    problems = make_problems(spec.dataset.arith, "train", len(questions))
    return [
        CotRecord(id=q.id, question=q.text, rationale=rationale(p, spec.level or 1, spec.format or "cot"))
        for q, p in zip(questions, problems, strict=True)
    ]


def answer_only_records(
    spec: CotSetSpec, questions: list[Question], workdir: Path | None = None, check: Check | None = None
) -> list[CotRecord]:
    """The answer alone: "The answer is X"."""
    return [CotRecord(id=q.id, question=q.text, rationale=f"The answer is {q.gold}") for q in questions]


def human_records(
    spec: CotSetSpec, questions: list[Question], workdir: Path | None = None, check: Check | None = None
) -> list[CotRecord]:
    """The dataset's own rationales, ending "The answer is X" (appended when absent).

    With `files`, they are read from that file (e.g. the paper's ``*_human_annotation.json``) and
    joined to the train questions like a recorded teacher's; otherwise they are the train file's.
    """
    if spec.teacher.files:
        return recorded_records(spec, questions)
    out = []
    for q in questions:
        if not q.rationale:
            out.append(
                CotRecord(id=q.id, question=q.text, error="the dataset has no human rationale for this item")
            )
            continue
        r = q.rationale.strip()
        if "the answer is" not in r.lower():
            r = f"{r} The answer is {q.gold}"
        out.append(CotRecord(id=q.id, question=q.text, rationale=r))
    return out


def recorded_records(
    spec: CotSetSpec, questions: list[Question], workdir: Path | None = None, check: Check | None = None
) -> list[CotRecord]:
    """Rationales read from the paper's files or any alpaca JSON/JSONL, joined to the train questions.

    The join is by question id (dataset name + normalised question text). A train question the file
    lacks is recorded with an error, not dropped. With no train questions (no train file in the
    grid), the file's own questions are used. A malformed item raises `DatasetError` naming the file
    and the item index.
    """
    from shared.cotset import read_cot_file

    path = recorded_path(spec.teacher.files or "", spec.level, spec.format)
    if not Path(path).exists():
        raise DatasetError(f"{path}: recorded file not found (teacher {spec.teacher.name})")
    by_id: dict[str, CotRecord] = {}
    for rec in read_cot_file(path, spec.dataset.name):
        by_id.setdefault(rec.id, rec)
    if not questions:
        return list(by_id.values())
    missing = f"no rationale for this question in {Path(path).name}"
    return [by_id.get(q.id) or CotRecord(id=q.id, question=q.text, error=missing) for q in questions]
