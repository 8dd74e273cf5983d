"""The prompt library: six granularity levels x four formats, for each task type.

The paper's prompts were not published; these are our own. They are versioned: `PROMPT_VERSION`
(in `shared/teacher_kinds.py`) is part of every CoT set key, so changing any text below must bump it.

- Level 1 asks for a one-line justification; level 6 for every elementary step and a check.
  Each level states a step count and a target length in words that grow with the level
  (calibrated on the paper's released GPT-4o files: SVAMP ~35 words at level 1, ~81 at level 6).
- Formats: `cot` (plain steps), `subquestion` (sub-questions, each answered), `rar` (rephrase the
  question, then solve) and `symbolic` (variables, symbols and equations).
- Every prompt requires the reply to end with "The answer is X", X in the task's answer form.
- A worked example at the same level comes before the question where one is written
  (`services/generator/exemplars.py`: math word problems, `cot` format; since prompt version p2).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from services.generator.exemplars import exemplar_messages
from shared.datasets.base import Question, TaskType
from shared.teacher_kinds import PROMPT_VERSION as PROMPT_VERSION  # declared with the teacher kinds

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
FORMATS: tuple[str, ...] = ("cot", "subquestion", "rar", "symbolic")


class LevelGuide(BaseModel):
    """What one granularity level asks of the teacher."""

    model_config = ConfigDict(frozen=True)

    level: int
    name: str
    min_steps: int
    max_steps: int
    min_words: int
    max_words: int
    detail: str


# fmt: off
LEVEL_GUIDES: dict[int, LevelGuide] = {
    1: LevelGuide(
        level=1, name="one-line justification", min_steps=1, max_steps=1, min_words=10, max_words=25,
        detail="Give a single sentence that names the key idea or operation. Do not show intermediate results.",
    ),
    2: LevelGuide(
        level=2, name="key steps", min_steps=2, max_steps=2, min_words=25, max_words=45,
        detail="Give only the key steps, merging routine operations, with the main intermediate result.",
    ),
    3: LevelGuide(
        level=3, name="every intermediate result", min_steps=3, max_steps=4, min_words=40, max_words=60,
        detail="Write one step per operation or fact used, and state every intermediate result.",
    ),
    4: LevelGuide(
        level=4, name="facts, then every step", min_steps=4, max_steps=6, min_words=50, max_words=75,
        detail=(
            "First restate the relevant given facts, then write one step per operation or inference, "
            "stating every intermediate result."
        ),
    ),
    5: LevelGuide(
        level=5, name="every step explained", min_steps=6, max_steps=8, min_words=65, max_words=95,
        detail=(
            "Restate the relevant facts, then for every step say why it is needed before doing it, "
            "and state every intermediate result with its unit or meaning."
        ),
    ),
    6: LevelGuide(
        level=6, name="elementary steps and a check", min_steps=8, max_steps=12, min_words=80, max_words=130,
        detail=(
            "Restate the relevant facts and what is asked; break every step into elementary operations "
            "(e.g. carry digits, apply one rule at a time) and explain each; state every intermediate result; "
            "finally check the result against the question (e.g. by the inverse operation or by ruling out "
            "the alternatives)."
        ),
    ),
}
# fmt: on

FORMAT_INSTRUCTIONS: dict[str, str] = {
    "cot": "Write the reasoning as plain sentences, one step after another.",
    "subquestion": (
        "Decompose the problem into a sequence of sub-questions. Write each sub-question, then answer it "
        "immediately, and let the last sub-question be the original question."
    ),
    "rar": (
        "First rephrase and expand the question in your own words, making every given quantity or fact "
        "explicit, then answer the rephrased question."
    ),
    "symbolic": (
        "Name the quantities or propositions with variables and symbols, write the relations between them as "
        "equations or logical formulas, and solve them symbolically."
    ),
}

_TASK_ROLE: dict[TaskType, str] = {
    TaskType.NUMBER: "a math word problem",
    TaskType.MATH: "a competition math problem",
    TaskType.CHOICE: "a multiple-choice question",
    TaskType.YESNO: "a yes/no question that needs implicit multi-step reasoning",
}
_TASK_ANSWER: dict[TaskType, str] = {
    TaskType.NUMBER: "X is the final number only, without units",
    TaskType.MATH: "X is the final answer as a simplified LaTeX expression",
    TaskType.CHOICE: "X is the letter of the correct option (A, B, C, D or E)",
    TaskType.YESNO: "X is True or False",
}


def level_guide(level: int) -> LevelGuide:
    """The guide for `level` (1-6)."""
    if level not in LEVEL_GUIDES:
        raise ValueError(f"level must be one of 1..6, got {level!r}")
    return LEVEL_GUIDES[level]


def _steps_text(g: LevelGuide) -> str:
    if g.max_steps == 1:
        return "exactly one reasoning step"
    return f"{g.min_steps} to {g.max_steps} reasoning steps"


def system_prompt(task: TaskType, level: int, fmt: str) -> str:
    """The instructions for one task type, level and format."""
    if fmt not in FORMAT_INSTRUCTIONS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    g = level_guide(level)
    task = TaskType(task)
    return (
        f"You are a careful teacher. Solve {_TASK_ROLE[task]} and show your reasoning at granularity "
        f"level {g.level} of 6 ({g.name}), where level 1 is the coarsest and level 6 the most detailed.\n"
        f"Granularity: {g.detail} Use {_steps_text(g)} and about {g.min_words} to {g.max_words} words.\n"
        f"Format: {FORMAT_INSTRUCTIONS[fmt]}\n"
        f'End your reply with the sentence "The answer is X", where {_TASK_ANSWER[task]}. '
        "Write nothing after it."
    )


def user_prompt(question: Question) -> str:
    """The question as the teacher sees it (multiple-choice text already lists its options)."""
    return question.text


def build_messages(question: Question, level: int, fmt: str) -> list[dict[str, str]]:
    """Chat messages asking for one rationale: system, the worked example if any, then the question."""
    return [
        {"role": "system", "content": system_prompt(question.task, level, fmt)},
        *exemplar_messages(question.task, level, fmt),
        {"role": "user", "content": user_prompt(question)},
    ]
