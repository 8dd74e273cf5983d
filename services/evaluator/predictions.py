"""Score existing generations without a model: ``cotd evaluate --predictions FILE --gold FILE``.

A predictions file is any JSON / JSONL list of objects with a question and an output, e.g. the
paper's teacher files (then the "accuracy" is the teacher's). Each prediction is joined to its gold
answer by question id: the id a loader gives the normalised question text (or the prediction's own
``id`` field, when it is one of the gold ids). Unmatched predictions are counted, not scored.

Field auto-detection (each can be forced):
- question: the first of `QUESTION_FIELDS` present;
- output: a ``<teacher>_output`` field if the item has one (the paper's MATH files, where ``output``
  is the gold answer), else the first of `OUTPUT_FIELDS` present. Forced names are tried in order,
  the first present winning (the paper's files mix ``gemini_output`` and ``chatgpt_output``); the
  metrics count the items that used each field, and an item with none is scored wrong
  (``n_no_output``), not a crash;
- gold: the dataset loader reads `gold_file` (which may be the predictions file itself); with
  `gold_field`, that field of `gold_file` is the gold answer (a bare answer or "The answer is X").
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.evaluator.scoring import score_summary
from shared.answers import extract_answer, grade_many, strict_fields
from shared.datasets.base import DatasetError, TaskType, normalize_text, parse_choices, question_id
from shared.datasets.files import Record, gold_from_text, read_records
from shared.datasets.registry import canonical_name, load_questions, task_type
from shared.paths import write_atomic

QUESTION_FIELDS = ("instruction", "question", "problem", "prompt", "input")
OUTPUT_FIELDS = ("output", "prediction", "response", "completion", "generation", "generated")


@dataclass(frozen=True)
class Gold:
    """The gold answer of one question (and its options, for multiple choice)."""

    answer: str
    choices: list[str] | None


def _pick_field(rec: Record, forced: str | None, candidates: tuple[str, ...], what: str) -> str:
    if forced is not None:
        if forced not in rec.data:
            raise rec.error(f"missing field '{forced}'")
        return forced
    for name in candidates:
        if name in rec.data:
            return name
    raise rec.error(f"no {what} field (looked for {', '.join(candidates)}; pass the field name)")


def question_field_of(rec: Record, forced: str | None = None) -> str:
    """The field holding the question text of a record."""
    return _pick_field(rec, forced, QUESTION_FIELDS, "question")


def output_field_of(rec: Record, forced: Sequence[str] | None = None) -> str | None:
    """The field holding the model / teacher output of a record, or None when it has none.

    With `forced` names, the first one present (with a value) wins; otherwise a ``<teacher>_output``
    field, then the first of `OUTPUT_FIELDS` (see the module docstring).
    """
    if forced:
        return next((f for f in forced if rec.data.get(f) is not None), None)
    teacher = [k for k in rec.data if k.endswith("_output") and k != "output" and rec.data[k] is not None]
    if teacher:
        return teacher[0]
    return next((f for f in OUTPUT_FIELDS if f in rec.data), None)


def gold_index(
    dataset: str, gold_file: str | Path, question_field: str | None = None, gold_field: str | None = None
) -> dict[str, Gold]:
    """Question id -> gold answer, from a gold file (the first occurrence of a question wins)."""
    name = canonical_name(dataset)
    task = task_type(name)
    index: dict[str, Gold] = {}
    if gold_field is None:
        for q in load_questions(
            name,
            "all" if name == "strategyqa" else "test",
            data_file=gold_file,
            source="file",
            skip_invalid=True,
        ):
            index.setdefault(q.id, Gold(q.gold, q.choices))
        return index
    for rec in read_records(gold_file):
        text = rec.text(question_field_of(rec, question_field))
        choices = parse_choices(text) if task is TaskType.CHOICE else None
        try:
            answer, _ = gold_from_text(rec, gold_field, task, choices)
        except DatasetError:
            continue  # an unanswerable gold item: its predictions count as unmatched
        index.setdefault(question_id(name, text), Gold(answer, choices))
    return index


def score_predictions(
    predictions_file: str | Path,
    dataset: str,
    gold_file: str | Path,
    out_dir: str | Path,
    question_field: str | None = None,
    output_field: str | Sequence[str] | None = None,
    gold_field: str | None = None,
    timeout: float = 5.0,
) -> dict:
    """Extract and grade every prediction; write ``predictions.jsonl`` and ``metrics.json``.

    Returns the metrics: accuracy, ci_low / ci_high (Wilson 95%), n (scored), correct,
    extraction_failure_rate, grading_timeouts (MATH items graded None, counted wrong), the paper's
    accuracy_strict (with its interval and unparsed count), n_predictions, n_unmatched,
    output_fields (items per output field), n_no_output (items with none, scored wrong) and the
    count of each extraction rule.
    """
    name = canonical_name(dataset)
    task = task_type(name)
    golds = gold_index(name, gold_file, question_field, gold_field)
    rows: list[dict] = []
    pending: list[tuple[str, Gold]] = []
    records = read_records(predictions_file)
    forced = [output_field] if isinstance(output_field, str) else output_field
    unmatched = 0
    used: Counter[str] = Counter()
    for rec in records:
        text = rec.text(question_field_of(rec, question_field))
        out_name = output_field_of(rec, forced)
        used[out_name or ""] += 1
        raw = rec.data.get(out_name) if out_name else None
        output = "" if raw is None else str(raw)
        own_id = rec.data.get("id")
        qid = own_id if isinstance(own_id, str) and own_id in golds else question_id(name, text)
        gold = golds.get(qid)
        if gold is None:
            unmatched += 1
            continue
        ext = extract_answer(output, task, gold.choices) if out_name else None
        rows.append(
            {
                "id": qid,
                "prompt": normalize_text(text),
                "output": output,
                "extracted": ext.value if ext else None,
                "gold": gold.answer,
                "rule": ext.rule if ext else "no_output",
                **strict_fields(output if out_name else None, gold.answer, name),
            }
        )
        pending.append((ext.value if ext else None, gold))
    if used and set(used) == {""}:
        looked = ", ".join(forced) if forced else f"<teacher>_output, {', '.join(OUTPUT_FIELDS)}"
        raise DatasetError(
            f"{Path(predictions_file).name}: no item has an output field (looked for {looked})"
        )
    if not rows:
        raise DatasetError(
            f"{Path(predictions_file).name}: none of {len(records)} predictions matched a question of "
            f"{Path(gold_file).name} (check --dataset and --question-field)"
        )
    graded = grade_many([p for p, _ in pending], [g.answer for _, g in pending], task, timeout=timeout)
    for row, ok in zip(rows, graded, strict=True):
        row["correct"] = bool(ok)
        row["grading_timeout"] = ok is None
    metrics = {
        **score_summary(rows),
        "n_predictions": len(records),
        "n_unmatched": unmatched,
        "output_fields": {k: v for k, v in used.most_common() if k},
        "n_no_output": used[""],
        "dataset": name,
        "task": task.value,
        "predictions_file": str(predictions_file),
        "gold_file": str(gold_file),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
