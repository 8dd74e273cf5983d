"""MATH answers: extraction, LaTeX normalisation, sympy equivalence, pooled grading with timeouts."""

from __future__ import annotations

import time

import pytest

import shared.math_grading as mg
from shared.answers import extract_answer, grade_many, is_correct, math_equivalent
from shared.datasets.base import TaskType
from shared.math_grading import last_boxed, latex_to_sympy, normalize_math

M = TaskType.MATH

EQUAL = [
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{1}{2}", "\\frac12"),
    ("\\tfrac{3}{4}", "0.75"),
    ("1/2", "\\frac{1}{2}"),
    ("-\\frac{1}{3}", "\\frac{-1}{3}"),
    ("\\frac{2}{4}", "\\frac{1}{2}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("(1, -2)", "\\left(1,-2\\right)"),
    ("x^2+5x+4", "(x+1)(x+4)"),
    ("2x+3", "3+2x"),
    ("y = 2x + 3", "2x+3"),
    ("x=5", "5"),
    ("30^\\circ", "30"),
    ("30^{\\circ}", "30"),
    ("45°", "45"),
    ("10\\text{ inches}", "10"),
    ("5\\text{ cm}^2", "5"),
    ("125\\textnormal{ miles", "125"),
    ("\\text{October 30}", "October 30"),
    ("\\$18.90", "18.9"),
    ("73\\%", "73"),
    ("25\\%", "25"),
    ("362,\\!880", "362880"),
    ("1,000,000", "1000000"),
    ("24{,}000", "24000"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt3"),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("12√13", "12\\sqrt{13}\\text{ feet}"),
    ("64π", "64\\pi"),
    ("2\\pi", "\\pi \\cdot 2"),
    ("3\\times 4", "12"),
    ("\\sqrt[3]{8}", "2"),
    ("2^{10}", "1024"),
    ("2\\frac{1}{2}", "\\frac{5}{2}"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("[2, 5)", "[2,5)"),
    ("(-\\infty, -2) \\cup (3, \\infty)", "(-\\infty,-2)\\cup(3,\\infty)"),
    ("(0, \\frac{1}{2}]", "(0, 0.5]"),
    ("1, -2", "-2, 1"),
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    (
        "\\begin{pmatrix} \\frac{1}{2} & 0 \\\\ 0 & 1 \\end{pmatrix}",
        "\\begin{pmatrix} 0.5 & 0 \\\\ 0 & 1 \\end{pmatrix}",
    ),
    ("\\text{(C)}", "C"),
    ("(B)", "\\text{B}"),
    (".5", "0.5"),
    ("5.0", "5"),
    ("0.50", "\\frac{1}{2}"),
    ("\\frac{x+1}{2}", "\\frac{x}{2}+\\frac{1}{2}"),
    ("\\sqrt{x^2}", "\\sqrt{x^{2}}"),
    ("\\left[ 1, 2 \\right]", "[1,2]"),
    ("x^2-1", "(x-1)(x+1)"),
    ("\\frac{\\pi}{6}", "\\frac{1}{6}\\pi"),
    ("\\dfrac{5}{11}", "5/11"),
    ("-b+2", "2 - b"),
    ("\\x0crac{2}{5}", "\\frac{2}{5}"),
    ("72^{\\\\circ}", "72"),
    ("a=3", "3"),
    ("\\infty", "\\infty"),
    ("e^{2}", "e^2"),
    ("\\sin(x)^2+\\cos(x)^2", "1"),
]

NOT_EQUAL = [
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("0.33", "\\frac{1}{3}"),
    ("\\pi", "3.14"),
    ("(-\\infty, 3]", "(-\\infty, 3)"),
    ("[2, 5)", "(2, 5)"),
    ("(1, 2)", "(2, 1)"),
    ("(1, 2)", "(1, 2, 3)"),
    ("(1,2)", "1"),
    ("x^2+5x+4", "(x+1)(x+5)"),
    ("2x+3", "2x-3"),
    ("30^\\circ", "60"),
    ("10\\text{ inches}", "12"),
    ("\\sqrt{2}", "2"),
    ("2\\sqrt{2}", "\\sqrt{6}"),
    ("73\\%", "0.73"),
    ("362880", "36288"),
    ("1, -2", "1, 2"),
    ("\\{1, 2\\}", "\\{1, 3\\}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
    ("C", "D"),
    ("x > 2", "x < 2"),
    ("y = 2x + 3", "y = 2x + 4"),
    ("\\text{October 30}", "October 31"),
    ("", "5"),
    ("-5", "5"),
    ("\\frac{\\pi}{6}", "\\frac{\\pi}{3}"),
    ("2\\frac{1}{2}", "1"),
    ("a+b", "a-b"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_math_equal(a: str, b: str) -> None:
    a = a.replace("\\x0c", "\x0c")
    assert math_equivalent(a, b, timeout=10) is True
    assert math_equivalent(b, a, timeout=10) is True


@pytest.mark.parametrize(("a", "b"), NOT_EQUAL)
def test_math_not_equal(a: str, b: str) -> None:
    assert math_equivalent(a, b, timeout=10) is False
    assert math_equivalent(b, a, timeout=10) is False


EXTRACT = [
    ("So the area is $\\boxed{76}$.", "76", "boxed"),
    ("Thus $\\boxed{\\frac{1}{2}}$ and done", "\\frac{1}{2}", "boxed"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", "boxed"),
    ("first \\boxed{1} then \\boxed{2}", "2", "boxed"),
    ("nested \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", "boxed"),
    ("the value is \\boxed 5 here", "5", "boxed"),
    ("Area = 100 - 24 = 76\n The answer is 76", "76", "answer_is"),
    ("The answer is $\\frac{2}{5}$.", "\\frac{2}{5}", "answer_is"),
    ("The answer is: \\(3\\sqrt{2}\\)", "3\\sqrt{2}", "answer_is"),
    ("We found \\boxed{3}. The answer is 4", "4", "answer_is"),
    ("The answer is 4. Double check: \\boxed{3}", "3", "boxed"),
    ("The answer is \\boxed{10}.", "10", "boxed"),
    ("The answer is \x0crac{1}{8}", "\\frac{1}{8}", "answer_is"),
    ("so we get 12 and then 15", "15", "last_number"),
    ("no answer here", None, "none"),
]


@pytest.mark.parametrize(("text", "value", "rule"), EXTRACT)
def test_math_extraction(text: str, value: str | None, rule: str) -> None:
    ext = extract_answer(text, M)
    assert (ext.value, ext.rule) == (value, rule)


def test_last_boxed_unclosed_brace() -> None:
    assert last_boxed("so \\boxed{\\frac{1}{2}") == ("\\frac{1}{2}", 3)
    assert last_boxed("nothing") is None


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("\\dfrac12", "\\frac{1}{2}"),
        ("10\\text{ cm}", "10"),
        ("5\\%", "5"),
        ("\\$3", "3"),
        ("x = \\frac{1}{2}", "\\frac{1}{2}"),
        ("1,234", "1234"),
        ("3/4", "\\frac{3}{4}"),
    ],
)
def test_normalize_math(raw: str, norm: str) -> None:
    assert normalize_math(raw) == norm


def test_latex_to_sympy_rejects_unsafe_input() -> None:
    with pytest.raises(ValueError):
        latex_to_sympy("__import__('os')")
    with pytest.raises(ValueError):
        latex_to_sympy("9^{99999999}")
    assert str(latex_to_sympy("\\frac{1}{2}x")) == "x/2"


def test_is_correct_math() -> None:
    assert is_correct("\\frac{1}{2}", "0.5", M)
    assert not is_correct(None, "0.5", M)


def test_grade_many_math_uses_pool() -> None:
    preds = ["x^2+5x+4", "\\sqrt{8}", "1/2", None, "3", "(1,2)"]
    golds = ["(x+1)(x+4)", "2\\sqrt2", "0.5", "1", "4", "(1, 2)"]
    assert grade_many(preds, golds, M, timeout=10, max_workers=2) == [True, True, True, False, False, True]


def _slow_equiv(a: str, b: str) -> bool:
    if a == "slow":
        time.sleep(30)
    return a == b


def _stuck_equiv(a: str, b: str) -> bool:
    import signal

    if a == "slow":
        signal.signal(signal.SIGALRM, signal.SIG_IGN)  # defeat the in-worker alarm: the backstop must act
        time.sleep(30)
    return a == b


@pytest.mark.parametrize("fake", [_slow_equiv, _stuck_equiv])
def test_grade_many_timeout_is_none_not_crash(monkeypatch: pytest.MonkeyPatch, fake) -> None:
    monkeypatch.setenv(mg.START_METHOD_ENV, "fork")  # workers inherit the monkeypatched function
    monkeypatch.setattr(mg, "_equiv_norm", fake)
    monkeypatch.setattr(mg, "BACKSTOP_SLACK_S", 0.5)
    t0 = time.monotonic()
    got = grade_many(["slow", "x+y", "a*b"], ["x", "x+y", "b*a"], M, timeout=0.5, max_workers=3)
    assert got == [None, True, False]
    assert time.monotonic() - t0 < 10
