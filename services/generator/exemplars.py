"""Worked examples shown to the teacher before the question: one per task type, at each level.

Small teachers follow an example's length and layout far better than a stated word count
(SmolLM2-135M wrote about 120 words at level 1 with the instructions alone, about 60 with the
example; with no example it answered StrategyQA questions in four words at every level). Each
example is written near the paper's mean words per level for its task type (SVAMP GPT-4o: 35, 39,
50, 58, 70, 81; StrategyQA LLaMA-3-70B: 28, 48, 70, 80, 114, 125) and in the `cot` format; other
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


EXEMPLARS: dict[TaskType, Exemplar] = {
    TaskType.NUMBER: Exemplar(
        question=(
            "A baker made 48 muffins. She sold 15 muffins in the morning and 19 muffins in the afternoon. "
            "How many muffins does she have left?"
        ),
        rationales={
            1: "She sold 15 + 19 = 34 muffins, so 48 - 34 = 14 muffins are left. The answer is 14.",
            2: "Plan: add the muffins sold in the morning and in the afternoon, then take them away from the "
            "muffins made.\nSolve: 15 + 19 = 34 muffins sold, and 48 - 34 = 14 muffins left.\nThe answer is 14.",
            3: "Given: 48 muffins made, 15 muffins sold in the morning, 19 muffins sold in the afternoon.\n"
            "Plan: add the two sales, then subtract the total sold from the muffins made.\n"
            "Solve: muffins sold = 15 + 19 = 34; muffins left = 48 - 34 = 14.\nThe answer is 14.",
            4: "Given: the baker made 48 muffins; she sold 15 muffins in the morning and 19 muffins in the "
            "afternoon.\nFind: the number of muffins she has left at the end of the day.\n"
            "Plan: first add the two sales, then subtract the total sold from the muffins made.\n"
            "Solve: muffins sold = 15 + 19 = 34. Muffins left = 48 - 34 = 14.\nThe answer is 14.",
            5: "Given: the baker made 48 muffins; she sold 15 muffins in the morning and 19 muffins in the "
            "afternoon.\nFind: the number of muffins she has left at the end of the day.\n"
            "Plan: first add the two sales, then subtract the total sold from the muffins made.\n"
            "Step 1: We need the total sold before we can subtract, so we add the two sales: 15 + 19 = 34 "
            "muffins.\nStep 2: The muffins left are the muffins made minus the muffins sold, so we subtract: "
            "48 - 34 = 14 muffins.\nSo 14 muffins are still unsold.\nThe answer is 14.",
            6: "Given: the baker made 48 muffins; she sold 15 muffins in the morning and 19 muffins in the "
            "afternoon.\nFind: the number of muffins she has left at the end of the day.\n"
            "Plan: first add the two sales, then subtract the total sold from the muffins made.\n"
            "Step 1: We need the total sold, so we add the two sales. Ones: 5 + 9 = 14, write 4, carry 1. "
            "Tens: 1 + 1 + 1 = 3. So 15 + 19 = 34 muffins sold.\nStep 2: The muffins left are the muffins "
            "made minus the muffins sold, so we subtract. Ones: 8 - 4 = 4. Tens: 4 - 3 = 1. So 48 - 34 = 14 "
            "muffins left.\nCheck: 14 + 34 = 48, the number of muffins she made, so the result is right.\n"
            "The answer is 14.",
        },
    ),
    TaskType.YESNO: Exemplar(
        question="Is a year on Mercury shorter than a year on Earth?",
        rationales={
            1: "Mercury goes around the Sun in about 88 days and Earth in about 365 days, so Mercury's year is "
            "shorter. The answer is True.",
            2: "Plan: compare how long each planet takes to go once around the Sun.\nReason: a year is one "
            "orbit. Mercury needs about 88 days for one orbit and Earth about 365 days, so a year on Mercury "
            "is shorter.\nThe answer is True.",
            3: "Given: a year is the time a planet takes to go once around the Sun.\nPlan: find how long each "
            "planet's orbit takes, then compare the two.\nReason: Mercury, the planet closest to the Sun, "
            "orbits in about 88 Earth days. Earth orbits in about 365 days. Since 88 is less than 365, a "
            "year on Mercury is shorter.\nThe answer is True.",
            4: "Given: a year is the time a planet takes to go once around the Sun; Mercury is the planet "
            "closest to the Sun, and Earth is the third.\nFind: whether one year on Mercury lasts less time "
            "than one year on Earth.\nPlan: find how long each planet's orbit takes, then compare the two.\n"
            "Reason: Mercury orbits the Sun in about 88 Earth days. Earth orbits the Sun in about 365 days. "
            "Since 88 is less than 365, a year on Mercury is shorter.\nThe answer is True.",
            5: "Given: a year is the time a planet takes to go once around the Sun; Mercury is the planet "
            "closest to the Sun, and Earth is the third.\nFind: whether one year on Mercury lasts less time "
            "than one year on Earth.\nPlan: find how long each planet's orbit takes, then compare the two.\n"
            "Step 1: To compare the years, we first need Mercury's orbit: Mercury goes around the Sun in "
            "about 88 Earth days.\nStep 2: We then need Earth's orbit to compare with: Earth goes around the "
            "Sun in about 365 days.\nStep 3: The shorter orbit gives the shorter year, so we compare the two "
            "durations: 88 days is less than 365 days.\nSo a year on Mercury is shorter than a year on "
            "Earth.\nThe answer is True.",
            6: "Given: a year is the time a planet takes to go once around the Sun; Mercury is the planet "
            "closest to the Sun, and Earth is the third.\nFind: whether one year on Mercury lasts less time "
            "than one year on Earth.\nPlan: find how long each planet's orbit takes, then compare the two.\n"
            "Step 1: A planet closer to the Sun has a shorter path and moves faster along it.\nStep 2: To "
            "compare the years, we first need Mercury's orbit: Mercury goes around the Sun in about 88 Earth "
            "days.\nStep 3: We then need Earth's orbit to compare with: Earth goes around the Sun in about "
            "365 days.\nStep 4: The shorter orbit gives the shorter year, so we compare the two durations: "
            "88 days is less than 365 days, by 365 - 88 = 277 days.\nCheck: 4 x 88 = 352, still less than "
            "365, so four Mercury years fit in one Earth year, which agrees.\nThe answer is True.",
        },
    ),
}


def exemplar_messages(task: TaskType, level: int, fmt: str) -> list[dict[str, str]]:
    """The example as a user/assistant exchange, or nothing (no example for this task or format)."""
    ex = EXEMPLARS.get(TaskType(task))
    if ex is None or fmt != "cot":
        return []
    return [{"role": "user", "content": ex.question}, {"role": "assistant", "content": ex.rationales[level]}]
