"""Build one CoT set: the teacher writes, answers are parsed and graded, the filter applies."""

from __future__ import annotations

import json
from pathlib import Path

from services.generator.stats import cot_stats
from shared.answers import extract_answer, is_correct
from shared.cotset import COT_FILE, CotRecord, write_records
from shared.datasets.base import Question
from shared.datasets.splits import load_split
from shared.specs import CotSetSpec


def teacher_records(spec: CotSetSpec, questions: list[Question], workdir: Path) -> list[CotRecord]:
    """Ask the spec's teacher for a rationale per question (servers resume from `workdir`)."""
    from services.generator.teachers import offline

    kind = spec.teacher.kind
    if kind == "procedural":
        return offline.procedural_records(spec, questions)
    if kind == "answer-only":
        return offline.answer_only_records(questions)
    if kind == "human":
        return offline.human_records(questions)
    if kind == "recorded":
        return offline.recorded_records(spec, questions)
    from services.generator.teachers.remote import remote_records

    return remote_records(spec, questions, workdir)


def grade_records(records: list[CotRecord], questions: list[Question], keep: str) -> list[CotRecord]:
    """Parse "The answer is X", grade against gold, and apply the filter policy."""
    by_id = {q.id: q for q in questions}
    out = []
    for r in records:
        q = by_id.get(r.id)
        task = q.task if q else None
        upd: dict = {"gold": q.gold if q else r.gold}
        if r.error is None and r.rationale and task is not None:
            ext = extract_answer(r.rationale, task, q.choices if q else None)
            upd["answer"] = ext.value
            upd["parsed"] = ext.rule == "answer_is" and ext.value is not None
            upd["correct"] = is_correct(ext.value, q.gold, task) if ext.value is not None else False
        rec = r.model_copy(update=upd)
        kept = rec.error is None and bool(rec.rationale) and (keep == "keep-all" or bool(rec.correct))
        out.append(rec.model_copy(update={"kept": kept}))
    return out


def build_cotset(spec: CotSetSpec, workdir: Path, out_dir: Path, count_tokens=None) -> dict:
    """Write `cot.jsonl` into `out_dir` and return the manifest fields (spec, filter, stats)."""
    questions = load_split(spec.dataset, "train")
    records = grade_records(teacher_records(spec, questions, workdir), questions, spec.teacher.filter)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(out_dir / COT_FILE, records)
    manifest = {
        "spec": json.loads(spec.model_dump_json()),
        "teacher": spec.teacher.name,
        "teacher_kind": spec.teacher.kind,
        "model": spec.teacher.model,
        "revision": spec.teacher.revision,
        "prompt_version": spec.prompt_version,
        "dataset": spec.dataset.name,
        "level": spec.level,
        "format": spec.format,
        "filter": spec.teacher.filter,
        "sampling": {
            "temperature": spec.teacher.temperature,
            "top_p": spec.teacher.top_p,
            "max_new_tokens": spec.teacher.max_new_tokens,
        },
        "stats": cot_stats(records, count_tokens),
    }
    return manifest
