"""MATH: competition mathematics (hub `EleutherAI/hendrycks_math`, all seven subject configs).

Local files:
- MATH-500 / MATH JSONL (``problem``, ``solution``, ``answer``): gold is ``answer``;
- the original MATH items (``problem``, ``solution``): gold is the last ``\\boxed{}`` of the solution;
- the paper's files (``problem``, ``solution``, ``output`` = gold, ``<teacher>_output`` = rationale).
  A question's own rationale (the `human` teacher's) is the solution, else the teacher's output.
  About 5% of their ``output`` values were cut at the first ``}`` (``\\frac{1}`` for
  ``\\frac{1}{2}``); when the solution's last ``\\boxed{}`` extends the cut value, it is the gold.
"""

from __future__ import annotations

from pathlib import Path

from shared.datasets.base import Question, make_question
from shared.datasets.files import Record, alpaca_question, hub_records, load_file
from shared.datasets.registry import DATASETS
from shared.math_grading import last_boxed

NAME = "math"
TASK = DATASETS[NAME].task
HUB_ID = "EleutherAI/hendrycks_math"
SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def teacher_field(rec: Record) -> str | None:
    """The ``<teacher>_output`` field of a paper MATH item (e.g. ``gemini_output``), if any."""
    fields = [k for k in rec.data if k.endswith("_output") and rec.data[k] is not None]
    return fields[0] if fields else None


def from_record(rec: Record) -> Question:
    """Parse one MATH item (MATH-500, original / hub row, the paper's file, or alpaca)."""
    if not rec.has("problem"):
        return alpaca_question(rec, NAME, TASK)
    problem = rec.text("problem")
    solution = rec.text("solution", allow_empty=True) if rec.has("solution") else ""
    if rec.has("answer"):
        gold = rec.text("answer").strip()
    elif rec.has("output"):
        gold = rec.text("output").strip()
        boxed = last_boxed(solution) if solution else None
        if boxed and boxed[0] != gold and boxed[0].startswith(gold):
            gold = boxed[0]  # the paper's `output` is cut at the first "}" ("\\frac{1}"): repair it
    elif not solution.strip():
        raise rec.error("missing field 'answer'")
    else:
        boxed = last_boxed(solution)
        if boxed is None:
            raise rec.error("field 'solution': no \\boxed{} answer")
        gold = boxed[0]
    tf = teacher_field(rec)
    if solution.strip():  # the human rationale (the paper's math_human uses the solution)
        rationale = f"{solution.strip()}\nThe answer is {gold}"
    else:
        rationale = rec.text(tf, allow_empty=True) if tf is not None else None
    return make_question(NAME, problem, gold, TASK, None, rationale)


def load_from_file(path: str | Path, split: str = "test", skip_invalid: bool = False) -> list[Question]:
    """MATH questions from a local file."""
    return load_file(path, from_record, skip_invalid)


def load_from_hub(split: str = "test") -> list[Question]:
    """MATH questions from the hub, all subjects concatenated (`train` or `test`)."""
    out: list[Question] = []
    for subject in SUBJECTS:
        out.extend(from_record(r) for r in hub_records(HUB_ID, subject, split))
    return out
