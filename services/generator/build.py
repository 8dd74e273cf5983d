"""Build one CoT set: the teacher writes, answers are parsed and graded, the filter applies."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from services.generator.grading import grade_records
from services.generator.stats import cot_stats, token_counter
from shared.cotset import COT_FILE, CotRecord, write_records
from shared.datasets.base import Question
from shared.datasets.registry import DATASETS
from shared.datasets.splits import load_split
from shared.errors import CotdError
from shared.specs import CotSetSpec
from shared.teacher_kinds import SERVER_KINDS, TEACHER_KINDS, cotset_problem

MANIFEST_FILE = "manifest.json"


def teacher_records(
    spec: CotSetSpec, questions: list[Question], workdir: Path, check: Callable[[], None] | None = None
) -> list[CotRecord]:
    """Ask the spec's teacher for a rationale per question (servers resume from `workdir`).

    `check()` is called after each reply of a teacher server (offline teachers take no time).
    """
    if problem := cotset_problem(spec):
        raise ValueError(problem)
    module, func = TEACHER_KINDS[spec.teacher.kind].writer.split(":")
    writer = getattr(importlib.import_module(module), func)
    return writer(spec, questions, workdir, check=check)


def _count_outcomes(spec: CotSetSpec, records: list[CotRecord]) -> None:
    from shared.metrics import GENERATOR_RATIONALES

    for r in records:
        if r.error is not None:
            continue
        outcome = "unparsed" if not r.parsed else ("correct" if r.correct else "incorrect")
        GENERATOR_RATIONALES.labels(teacher=spec.teacher.name, outcome=outcome).inc()


def manifest_fields(
    spec: CotSetSpec, records: list[CotRecord], count_tokens: Callable[[str], int] | None, tokenizer: str
) -> dict:
    """The manifest of a CoT set (spec, teacher, sampling, statistics)."""
    return {
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
        "tokenizer": tokenizer,
        "stats": cot_stats(records, count_tokens),
    }


def _counter(spec: CotSetSpec, count_tokens: Callable[[str], int] | None) -> tuple[Callable[[str], int], str]:
    if count_tokens is not None:
        return count_tokens, "given"
    model = spec.teacher.model if spec.teacher.kind in SERVER_KINDS else None
    return token_counter(model, spec.teacher.revision)


def write_cotset(
    spec: CotSetSpec,
    records: list[CotRecord],
    questions: list[Question],
    out_dir: Path,
    count_tokens: Callable[[str], int] | None = None,
    extra: dict | None = None,
) -> dict:
    """Grade `records`, write `cot.jsonl` and `manifest.json` into `out_dir`; return the manifest."""
    from shared.datasets.registry import task_type

    graded = grade_records(records, questions, spec.teacher.filter, task_type(spec.dataset.name))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(out_dir / COT_FILE, graded)
    fn, tok_name = _counter(spec, count_tokens)
    manifest = manifest_fields(spec, graded, fn, tok_name) | {"key": spec.key} | (extra or {})
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


class TeacherUnavailable(CotdError, ConnectionError):
    """Every request to a teacher server failed: an outage, retried by the workers with backoff."""


def build_cotset(
    spec: CotSetSpec, workdir: Path, out_dir: Path, count_tokens=None, check: Callable[[], None] | None = None
) -> dict:
    """Write `cot.jsonl` into `out_dir` and return the manifest fields (spec, filter, stats).

    Token statistics use `count_tokens` when given, else the teacher's tokenizer when it loads
    (tgi/openai teachers with a local or cached model), else the regex fallback of `stats.py`.
    """
    from shared.datasets.registry import task_type

    # a recorded teacher without a train file uses the file's own questions (no gold: not graded)
    recorded_only = (
        spec.teacher.kind == "recorded"
        and not DATASETS[spec.dataset.name].generated
        and not spec.dataset.train_file
    )
    questions = [] if recorded_only else load_split(spec.dataset, "train")
    task = task_type(spec.dataset.name)
    records = grade_records(
        teacher_records(spec, questions, workdir, check), questions, spec.teacher.filter, task
    )
    if spec.teacher.kind in SERVER_KINDS:
        _count_outcomes(spec, records)
        if records and all(r.error for r in records):
            # an outage, not a CoT set: publish nothing, so the task retries (replies so far are journaled)
            raise TeacherUnavailable(
                f"teacher {spec.teacher.name}: all {len(records)} requests failed, e.g. {records[0].error}"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(out_dir / COT_FILE, records)
    fn, tok_name = _counter(spec, count_tokens)
    return manifest_fields(spec, records, fn, tok_name)
