"""Grading a teacher's records: parse "The answer is X", grade against gold, apply the filter."""

from __future__ import annotations

from typing import Any

from shared.answers import extract_answer, is_correct, strict_fields
from shared.cotset import CotRecord
from shared.datasets.base import Question, TaskType, dataset_of, parse_choices


def grade_records(
    records: list[CotRecord], questions: list[Question], keep: str, task: TaskType | None = None
) -> list[CotRecord]:
    """Parse "The answer is X", grade against gold (ours and the paper's strict way), apply the filter.

    Records whose question is not among `questions` are still parsed when `task` is given (gold
    stays unknown, `correct` None). A reply without "The answer is" keeps its raw text, parsed False.
    """
    by_id = {q.id: q for q in questions}
    out = []
    for r in records:
        q = by_id.get(r.id)
        rtask = q.task if q else task
        upd: dict[str, Any] = {"gold": q.gold if q else r.gold}
        if r.error is None and r.rationale and rtask is not None:
            choices = q.choices if q else (parse_choices(r.question) if rtask is TaskType.CHOICE else None)
            ext = extract_answer(r.rationale, rtask, choices)
            upd["answer"] = ext.value
            upd["parsed"] = ext.rule == "answer_is" and ext.value is not None
            if q is not None:
                upd["correct"] = is_correct(ext.value, q.gold, rtask) if ext.value is not None else False
                upd |= strict_fields(r.rationale, q.gold, dataset_of(q.id))
        correct = upd.get("correct", r.correct)
        upd["kept"] = r.error is None and bool(r.rationale) and (keep == "keep-all" or bool(correct))
        out.append(r.model_copy(update=upd))
    return out
