"""Teachers that call no server: procedural (arith), answer-only, human, recorded files."""

from __future__ import annotations

from shared.cotset import CotRecord
from shared.datasets.base import DatasetError, Question, question_id
from shared.specs import CotSetSpec, recorded_path


def procedural_records(spec: CotSetSpec, questions: list[Question]) -> list[CotRecord]:
    """Exact arith rationales at the spec's level and format."""
    from services.generator.teachers.procedural import rationale
    from shared.datasets.arith import make_problems

    if spec.dataset.name != "arith":
        raise ValueError(f"the procedural teacher writes arith only, not {spec.dataset.name}")
    problems = make_problems(spec.dataset.arith, "train", len(questions))
    return [
        CotRecord(id=q.id, question=q.text, rationale=rationale(p, spec.level or 1, spec.format or "cot"))
        for q, p in zip(questions, problems, strict=True)
    ]


def answer_only_records(questions: list[Question]) -> list[CotRecord]:
    """The answer alone: "The answer is X"."""
    return [CotRecord(id=q.id, question=q.text, rationale=f"The answer is {q.gold}") for q in questions]


def human_records(questions: list[Question]) -> list[CotRecord]:
    """The dataset's own rationales, ending "The answer is X" (appended when absent)."""
    out = []
    for q in questions:
        if not q.rationale:
            out.append(CotRecord(id=q.id, question=q.text, error="the dataset has no human rationale for this item"))
            continue
        r = q.rationale.strip()
        if "the answer is" not in r.lower():
            r = f"{r} The answer is {q.gold}"
        out.append(CotRecord(id=q.id, question=q.text, rationale=r))
    return out


def recorded_records(spec: CotSetSpec, questions: list[Question]) -> list[CotRecord]:
    """Rationales read from alpaca JSON/JSONL files, joined to the train questions by text.

    With no train questions (no train file in the grid), the file's own questions are used.
    """
    from shared.datasets.files import read_records

    if not spec.teacher.files:
        raise ValueError(f"teacher {spec.teacher.name}: kind recorded needs `files`")
    path = recorded_path(spec.teacher.files, spec.level, spec.format)
    out = []
    for rec in read_records(path):
        qtext = rec.data.get("instruction", rec.data.get("question", rec.data.get("problem")))
        rationale = rec.data.get("output")
        for k, v in rec.data.items():
            if k.endswith("_output") and isinstance(v, str):
                rationale = v  # the paper's MATH files: <teacher>_output
        if not isinstance(qtext, str) or not isinstance(rationale, str):
            raise DatasetError(f"{rec.source}: {rec.where}: needs instruction/question/problem and output fields")
        out.append(CotRecord(id=question_id(spec.dataset.name, qtext), question=qtext.strip(), rationale=rationale.strip()))
    if questions:
        wanted = {q.id for q in questions}
        out = [r for r in out if r.id in wanted]
    return out
