"""The paper's strict extraction (its regex for commonsense sets, MAmmoTH's answer_clean for math)."""

from __future__ import annotations

import pytest

from shared.answers import extract_answer, strict_correct, strict_extract, strict_fields, strict_summary
from shared.answers_strict import strip_math
from shared.datasets.base import TaskType


@pytest.mark.parametrize(
    ("text", "dataset", "expected"),
    [
        ("It floats. The answer is True.", "strategyqa", "True"),
        ("the answer is False", "strategyqa", "False"),
        ("So the answer is true.", "strategyqa", None),  # the regex is case-sensitive on True/False
        ("The answer is: True", "strategyqa", None),  # no colon in the paper's regex
        ("The answer is True. On reflection, the answer is False.", "strategyqa", "False"),  # the last
        ("Yes, it could.", "strategyqa", None),
        ("The answer is (B)", "csqa", None),  # a parenthesised letter is not read
        ("Hence the answer is B.", "openbookqa", "B"),
        ("He has 3 + 4 = 7 apples. The answer is 7.", "svamp", "7"),
        ("The answer is 1,250.00 dollars", "gsm8k", "1250"),
        ("The answer is 12 apples, not 13.", "svamp", "12"),  # the first number after the trigger
        ("2 + 3 = 5 and then 5 * 2 = 10", "svamp", "10"),  # no trigger: the last number
        ("The answer is 30 - 12 = 18.", "svamp", "18"),  # what follows the last '='
        ("The answer is 0.50", "arith", "0.5"),
        ("No numbers here.", "svamp", None),
        ("The answer is (C) 25", "aqua", "C"),
        ("Option d seems right", "aqua", "D"),  # MAmmoTH upper-cases before looking for a letter
        ("The answer is $\\boxed{\\frac{1}{2}}$.", "math", "\\frac{1}{2}"),
        ("so we get \\boxed{x^2 + 1}", "math", "x^2+1"),
        ("The answer is \\dfrac12.", "math", "\\frac{1}{2}"),
        ("it is 3.5 or 7", "math", "7"),
    ],
)
def test_strict_extract(text: str, dataset: str, expected: str | None) -> None:
    assert strict_extract(text, dataset) == expected


def test_strict_is_stricter_than_ours_where_the_paper_was() -> None:
    text = "So the answer is true."
    assert strict_extract(text, "strategyqa") is None
    assert extract_answer(text, TaskType.YESNO).value == "True"


@pytest.mark.parametrize(
    ("pred", "gold", "dataset", "ok"),
    [
        ("True", "True", "strategyqa", True),
        ("False", "True", "strategyqa", False),
        (None, "True", "strategyqa", False),
        ("B", "B", "csqa", True),
        ("145", "145", "svamp", True),
        ("144.6", "145", "svamp", True),  # integer gold: compared after rounding
        ("146", "145", "svamp", False),
        ("2.42", "2.5", "gsm8k", True),  # other gold: within 4 %
        ("2.3", "2.5", "gsm8k", False),
        ("1/2", "0.5", "svamp", True),
        ("C", "C", "aqua", True),
        ("\\frac{1}{2}", "\\dfrac{1}{2}", "math", True),
        ("0.5", "\\frac{1}{2}", "math", True),
        ("x^2+1", "x^2 + 1", "math", True),
        ("x+1", "x^2 + 1", "math", False),
    ],
)
def test_strict_correct(pred: str | None, gold: str, dataset: str, ok: bool) -> None:
    assert strict_correct(pred, gold, dataset) is ok


def test_strip_math_normalises_like_hendrycks() -> None:
    assert strip_math("\\left( 3, \\tfrac12 \\right)") == "(3,\\frac{1}{2})"
    assert strip_math("x = 5") == "5"
    assert strip_math(".5") == "0.5"
    assert strip_math("10\\%") == "10"
    assert strip_math("3/4") == "\\frac{3}{4}"
    assert strip_math("\\sqrt2") == "\\sqrt{2}"


def test_unknown_dataset_has_no_strict_verdict() -> None:
    assert strict_fields("The answer is 3", "3", "nope") == {"extracted_strict": None, "correct_strict": None}
    with pytest.raises(ValueError, match="no strict scoring for dataset 'nope'"):
        strict_extract("x", "nope")


def test_strict_summary_counts_unparsed_as_wrong() -> None:
    rows = [
        strict_fields(t, "True", "strategyqa") for t in ("The answer is True", "true", "The answer is False")
    ]
    s = strict_summary(rows)
    assert (s["correct_strict"], s["unparsed_strict"]) == (1, 1)
    assert s["accuracy_strict"] == pytest.approx(1 / 3)
    assert s["ci_low_strict"] < 1 / 3 < s["ci_high_strict"]
    assert strict_summary([{"correct_strict": None}])["accuracy_strict"] is None
