"""Answer extraction and grading for numbers, multiple choice and yes/no."""

from __future__ import annotations

import pytest

from shared.answers import (
    canonical_choice,
    canonical_number,
    canonical_yesno,
    extract_answer,
    grade_many,
    is_correct,
)
from shared.datasets.base import TaskType
from shared.stats import wilson_interval

N, C, Y = TaskType.NUMBER, TaskType.CHOICE, TaskType.YESNO

NUMBER_CASES = [
    ("Divide 290 by 2. The answer is 145", "145", "answer_is"),
    ("290.0 / 2.0 = 145.0. The answer is 145.0", "145", "answer_is"),
    ("She makes 9 * 2 = $18 every day. The answer is $18.", "18", "answer_is"),
    ("The answer is 1,234,567", "1234567", "answer_is"),
    ("The answer is $1,234.50.", "1234.5", "answer_is"),
    ("The answer is -7 degrees", "-7", "answer_is"),
    ("The answer is −7", "-7", "answer_is"),
    ("So 3/4 of the cake remains. The answer is 3/4", "0.75", "answer_is"),
    ("The answer is 50%", "50", "answer_is"),
    ("The answer is: 12 apples", "12", "answer_is"),
    ("The answer is **42**.", "42", "answer_is"),
    ("the answer is 0.5 liters", "0.5", "answer_is"),
    ("First 3 then 5. The answer is 8. Then I checked 4 + 4 = 8 and the answer is 8", "8", "answer_is"),
    ("The answer is 10. Wait, recount: the answer is 12", "12", "answer_is"),
    ("We get \\boxed{17} in total", "17", "boxed"),
    ("48/2 = 24 clips in May.\n#### 72", "72", "hashes"),
    ("He had 12 apples and 5 pears, so 17 fruits", "17", "last_number"),
    ("Total: 1,000 + 250 = 1,250 dollars", "1250", "last_number"),
    ("The answer is .25", "0.25", "answer_is"),
    ("No numbers here at all", None, "none"),
    ("The answer is unknown", None, "none"),
    ("The answer is 3.50", "3.5", "answer_is"),
]


@pytest.mark.parametrize(("text", "value", "rule"), NUMBER_CASES)
def test_number_extraction(text: str, value: str | None, rule: str) -> None:
    ext = extract_answer(text, N)
    assert (ext.value, ext.rule) == (value, rule)


NUMBER_GRADES = [
    ("145", "145", True),
    ("145", "145.0", True),
    ("145.0", "145", True),
    ("51", 51.0, True),
    ("0.75", "3/4", True),
    ("1234.5", "1,234.50", True),
    ("18", "$18", True),
    ("50", "50%", True),
    ("-7", "-7", True),
    ("7", "-7", False),
    ("144", "145", False),
    ("0.333", "1/3", False),
    ("1000000", "1,000,000", True),
    ("2.5", "2.50", True),
    (None, "5", False),
    ("abc", "5", False),
    ("1e3", "1000", True),
    ("12", "12.000001", True),
    ("12", "12.01", False),
    ("0", "0", True),
]


@pytest.mark.parametrize(("pred", "gold", "ok"), NUMBER_GRADES)
def test_number_grading(pred: str | None, gold: str, ok: bool) -> None:
    assert is_correct(pred, str(gold), N) is ok


OBQA = [
    "make more phone calls",
    "quit eating lunch out",
    "buy less with monopoly money",
    "have lunch with friends",
]
CSQA = ["bank", "library", "department store", "mall", "new york"]
AQUA = ["5(√3 + 1)", "6(√3 + √2)", "30 cm", "8(√3 – 2)", "None of these"]

CHOICE_CASES = [
    ("Saving requires spending less. The answer is B", OBQA, "B", "answer_is"),
    ("The answer is (C) 66", AQUA, "C", "answer_is"),
    ("The answer is: B) 6000", AQUA, "B", "answer_is"),
    ("The answer is option D", OBQA, "D", "answer_is"),
    ("Therefore, the answer is <answer> B", OBQA, "B", "answer_is"),
    ("The answer is therefore A", OBQA, "A", "answer_is"),
    ("The answer is <B>", OBQA, "B", "answer_is"),
    ("3 x 10 = 30 ... The answer is c", AQUA, "C", "answer_is"),
    ("The answer isA1/4", AQUA, "A", "answer_is"),
    ("The answer is quit eating lunch out.", OBQA, "B", "answer_is_text"),
    ("The answer is department store", CSQA, "C", "answer_is_text"),
    ("The answer is 30cm", AQUA, "C", "answer_is_text"),
    ("The answer is A. Then again, the answer is E", CSQA, "E", "answer_is"),
    ("D", CSQA, "D", "whole"),
    ("(B)", CSQA, "B", "whole"),
    ("Option C", AQUA, "C", "whole"),
    ("E.", AQUA, "E", "whole"),
    ("library", CSQA, "B", "whole"),
    ("Correct answer - A", AQUA, "A", "letter_phrase"),
    ("After checking each one. Answer: D", CSQA, "D", "letter_phrase"),
    ("We compute it; so (E) fits best", AQUA, "E", "letter_paren"),
    ("C 6.5 miles per hour", AQUA, "C", "leading_letter"),
    ("we get the answer of 8(√3 – 2) here", AQUA, "D", "last_option_text"),
    ("None of the options fit, so I cannot say.", OBQA, None, "none"),
    ("The answer is E", OBQA, None, "none"),  # OpenBookQA has only A-D
]


@pytest.mark.parametrize(("text", "choices", "value", "rule"), CHOICE_CASES)
def test_choice_extraction(text: str, choices: list[str], value: str | None, rule: str) -> None:
    ext = extract_answer(text, C, choices)
    assert (ext.value, ext.rule) == (value, rule)


CHOICE_GRADES = [
    ("A", "A", True),
    ("a", "A", True),
    ("(A)", "A", True),
    ("B)", "B", True),
    ("B:", "B", True),
    ("C.", "C", True),
    ("Option D", "D", True),
    ("E", "D", False),
    (None, "A", False),
    ("F", "F", False),
    ("", "A", False),
    ("AB", "A", False),
    ("'A'", "A", True),
    ("- B", "B", True),
    ("b", "B", True),
    ("C", "c", True),
    ("D", "(D)", True),
    ("answer", "A", False),
    ("A", "B", False),
    ("E", "E", True),
]


@pytest.mark.parametrize(("pred", "gold", "ok"), CHOICE_GRADES)
def test_choice_grading(pred: str | None, gold: str, ok: bool) -> None:
    assert is_correct(pred, gold, C) is ok


def test_canonical_choice_by_option_text() -> None:
    assert canonical_choice("department store", CSQA) == "C"
    assert canonical_choice("New York", CSQA) == "E"
    assert canonical_choice("the moon", CSQA) is None
    assert canonical_choice("E", OBQA) is None


YESNO_CASES = [
    ("Genghis Khan had many sons. The answer is True", "True", "answer_is"),
    ("The answer is False.", "False", "answer_is"),
    ("the answer is yes", "True", "answer_is"),
    ("The answer is No, because ...", "False", "answer_is"),
    ("The answer is: **True**", "True", "answer_is"),
    ("...not present at his death.TheanswerisFalse", "False", "answer_is"),
    ("It is true that X. But the answer is False", "False", "answer_is"),
    ("The answer is True. Actually, the answer is False", "False", "answer_is"),
    ("True", "True", "whole"),
    ("false", "False", "whole"),
    ("Yes.", "True", "whole"),
    ("no", "False", "whole"),
    ("Yes, because whales are mammals.", "True", "leading"),
    ("No. Paris is in France.", "False", "leading"),
    ("So the statement is false overall.", "False", "last_truefalse"),
    ("Claim 1 is true, claim 2 is false, so it is true", "True", "last_truefalse"),
    ("There is no empirical evidence. The answer is Undefined", None, "none"),
    ("I cannot decide.", None, "none"),
    ("The answer is (True)", "True", "answer_is"),
    ("The answer is 'no'", "False", "answer_is"),
    ("", None, "none"),
]


@pytest.mark.parametrize(("text", "value", "rule"), YESNO_CASES)
def test_yesno_extraction(text: str, value: str | None, rule: str) -> None:
    ext = extract_answer(text, Y)
    assert (ext.value, ext.rule) == (value, rule)


YESNO_GRADES = [
    ("True", "True", True),
    ("True", "true", True),
    ("yes", "True", True),
    ("Yes", "TRUE", True),
    ("no", "False", True),
    ("False", "false", True),
    ("False", "True", False),
    ("yes", "False", False),
    ("no", "True", False),
    (None, "True", False),
    ("maybe", "True", False),
    ("True.", "True", True),
    ("NO", "False", True),
    ("", "False", False),
    ("True", "yes", True),
    ("False", "no", True),
    ("1", "True", True),
    ("0", "False", True),
    ("Trueish", "True", False),
    ("incorrect", "False", True),
]


@pytest.mark.parametrize(("pred", "gold", "ok"), YESNO_GRADES)
def test_yesno_grading(pred: str | None, gold: str, ok: bool) -> None:
    assert is_correct(pred, gold, Y) is ok


def test_canonical_helpers() -> None:
    assert canonical_number("1,000") == "1000"
    assert canonical_number("2.50") == "2.5"
    assert canonical_number(51.0) == "51"
    assert canonical_number("x") is None
    assert canonical_yesno(True) == "True"
    assert canonical_yesno("nope") is None


def test_grade_many_simple_tasks() -> None:
    assert grade_many(["1", None, "3"], ["1", "2", "4"], N) == [True, False, False]
    assert grade_many(["A", "b"], ["A", "B"], C) == [True, True]
    assert grade_many(["True"], ["False"], Y) == [False]
    with pytest.raises(ValueError, match="2 predictions but 1"):
        grade_many(["1", "2"], ["1"], N)


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (0, 0, 0.0, 1.0),
        (50, 100, 0.4038, 0.5962),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (683, 700, 0.9615, 0.9848),
    ],
)
def test_wilson_interval(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
