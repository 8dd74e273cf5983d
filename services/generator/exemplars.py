"""Worked examples shown to the teacher before the question: one per task type, at each level.

Small teachers follow an example's length and layout far better than a stated word count
(SmolLM2-135M wrote about 120 words at level 1 with the instructions alone, about 60 with the
example; with no example it answered StrategyQA questions in four words at every level). The
examples' lengths rise strictly with the level (math: 21, 40, 52, 60, 77, 110 words; yes/no: 24,
43, 73, 83, 130, 151) and their layouts differ: one sentence (1), a plan and its working (2),
first/then/finally lines (3; numbered steps for yes/no), facts then numbered steps (4), steps that
say why (5), and more of them with a check (6). The texts were picked by measuring what
SmolLM2-135M writes after each (`bench/prompt_lengths.py`; prompt version p4), not by the word
counts alone: its lengths follow an example's only loosely. All are in the `cot` format; other
formats get no example, since one in plain steps would contradict their instructions. Adding a task
type is one entry (multiple-choice and MATH have none yet).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.datasets.base import TaskType


@dataclass(frozen=True)
class Exemplar:
    """A question and its rationale at each level (1-6), each ending with "The answer is X"."""

    question: str
    rationales: dict[int, str]


# The yes/no example's level 5; level 6 adds a concluding step to it.
_YESNO_L5 = (
    "Facts: a year is one full orbit of a planet around the Sun; Mercury is the planet closest "
    "to the Sun, and Earth is the third; we are asked whether Mercury's year is shorter than "
    "Earth's.\nStep 1: A planet closer to the Sun has a shorter path and moves faster along "
    "it.\nStep 2: Mercury's orbit takes about 88 Earth days.\nStep 3: Earth's orbit takes about "
    "365 days.\nStep 4: Compare the numbers: 88 has two digits and 365 has three, so 88 is less "
    "than 365.\nStep 5: So Mercury's year is shorter, by 365 - 88 = 277 days.\nStep 6: Check: 4 "
    "x 88 = 352, still less than 365, so four Mercury years fit in one Earth year, which "
    "agrees.\nThe answer is True."
)


EXEMPLARS: dict[TaskType, Exemplar] = {
    TaskType.NUMBER: Exemplar(
        question=(
            "A baker made 48 muffins. She sold 15 muffins in the morning and 19 muffins in the afternoon. "
            "How many muffins does she have left?"
        ),
        rationales={
            1: "She sold 15 + 19 = 34 muffins, so 48 - 34 = 14 muffins are left. The answer is 14.",
            2: "Plan: add the muffins sold in the morning and in the afternoon, then take them away from "
            "the muffins made.\nSolve: 15 + 19 = 34 muffins sold, and 48 - 34 = 14 muffins left.\nThe "
            "answer is 14.",
            3: "First, the baker made 48 muffins.\nThen she sold 15 muffins in the morning and 19 muffins "
            "in the afternoon, so she sold 15 + 19 = 34 muffins in all.\nFinally, the muffins left are "
            "the muffins made minus the muffins sold: 48 - 34 = 14.\nThe answer is 14.",
            4: "Facts: the baker made 48 muffins; she sold 15 muffins in the morning; she sold 19 muffins "
            "in the afternoon.\nStep 1: Muffins sold in the morning: 15.\nStep 2: Muffins sold in the "
            "afternoon: 19.\nStep 3: Muffins sold in total: 15 + 19 = 34.\nStep 4: Muffins left: 48 - "
            "34 = 14.\nThe answer is 14.",
            5: "Facts: the baker made 48 muffins and sold 15 in the morning and 19 in the afternoon.\nStep "
            "1: To know how many are left, we first need the total sold, so we add the two sales: 15 + "
            "19 = 34 muffins.\nStep 2: The muffins left are the muffins made minus the muffins sold, so "
            "we subtract: 48 - 34 = 14 muffins.\nStep 3: So 14 muffins are still unsold.\nThe answer is "
            "14.",
            6: "Facts: the baker made 48 muffins, sold 15 in the morning and 19 in the afternoon; we want "
            "the muffins left.\nStep 1: To know how many are left, we first need the total sold, so we "
            "add the morning and afternoon sales: 15 + 19 = 34 muffins sold.\nStep 2: The muffins left "
            "are the muffins made minus the muffins sold, so we subtract: 48 - 34 = 14 muffins "
            "left.\nStep 3: So 14 muffins are still unsold at the end of the day.\nStep 4: Check: 14 + "
            "34 = 48, the number of muffins she made, so the result is right.\nThe answer is 14.",
        },
    ),
    TaskType.YESNO: Exemplar(
        question="Is a year on Mercury shorter than a year on Earth?",
        rationales={
            1: "Mercury goes around the Sun in about 88 days and Earth in about 365 days, so Mercury's "
            "year is shorter. The answer is True.",
            2: "Plan: compare how long each planet takes to go once around the Sun.\nReason: a year is one "
            "orbit. Mercury needs about 88 days for one orbit and Earth about 365 days, so a year on "
            "Mercury is shorter.\nThe answer is True.",
            3: "Step 1: A year on a planet is the time it takes to go once around the Sun.\nStep 2: "
            "Mercury is the planet closest to the Sun, and it completes one orbit in about 88 Earth "
            "days.\nStep 3: Earth completes one orbit in about 365 days.\nStep 4: 88 days is less than "
            "365 days, so a year on Mercury is shorter than a year on Earth.\nThe answer is True.",
            4: "Facts: a year is the time a planet takes to orbit the Sun once; Mercury is the planet "
            "closest to the Sun; Earth is the third planet from the Sun.\nStep 1: Mercury's orbit takes "
            "about 88 Earth days.\nStep 2: Earth's orbit takes about 365 days.\nStep 3: Compare the two "
            "lengths: 88 is less than 365.\nStep 4: A shorter orbit means a shorter year, so a year on "
            "Mercury is shorter than a year on Earth.\nThe answer is True.",
            5: _YESNO_L5,
            6: _YESNO_L5.removesuffix("The answer is True.")
            + "Step 7: So the statement in the question is correct: a year on Mercury is shorter "
            "than a year on Earth.\nThe answer is True.",
        },
    ),
}


def exemplar_messages(task: TaskType, level: int, fmt: str) -> list[dict[str, str]]:
    """The example as a user/assistant exchange, or nothing (no example for this task or format)."""
    ex = EXEMPLARS.get(TaskType(task))
    if ex is None or fmt != "cot":
        return []
    return [{"role": "user", "content": ex.question}, {"role": "assistant", "content": ex.rationales[level]}]
