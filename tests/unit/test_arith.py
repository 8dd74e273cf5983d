"""The built-in arith dataset and the procedural teacher."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from services.generator.teachers.procedural import answer_only, rationale
from shared.answers import extract_answer
from shared.datasets.arith import load_arith_split, make_problems
from shared.datasets.base import TaskType
from shared.specs import ArithParams
from tests.conftest import REPO_ROOT

LEVELS = range(1, 7)
FORMATS = ("cot", "subquestion", "rar", "symbolic")


def _evaluate(problem) -> int:
    """An independent evaluation of the problem text (not the generator's own values)."""
    text = problem.text
    value = int(re.match(r"\w+ has (\d+)", text).group(1))
    for sentence in text.split(". ")[1:]:
        if m := re.search(r"gets (\d+) more", sentence):
            value += int(m.group(1))
        elif m := re.search(r"gives away (\d+)", sentence):
            value -= int(m.group(1))
        elif "doubles" in sentence:
            value *= 2
        elif "triples" in sentence:
            value *= 3
    return value


def test_deterministic_and_seeded():
    a = [p.text for p in make_problems(ArithParams(), "train", 300)]
    b = [p.text for p in make_problems(ArithParams(), "train", 300)]
    c = [p.text for p in make_problems(ArithParams(seed=1), "train", 300)]
    assert a == b
    assert a != c


def test_deterministic_across_processes():
    code = "from shared.datasets.arith import load_arith_split; print([q.id for q in load_arith_split('test', 50)])"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT, env={"PYTHONHASHSEED": s, "PATH": ""}).stdout for s in ("1", "2")}
    assert len(outs) == 1


def test_train_and_test_share_no_problem_structure():
    def structure(p):
        return (p.start, tuple((s.op, s.arg) for s in p.steps))

    train = {structure(p) for p in make_problems(ArithParams(), "train", 5000)}
    test = make_problems(ArithParams(), "test", 300)
    assert not {structure(p) for p in test} & train
    assert len({p.text for p in test}) == 300


def test_gold_answers_and_bounds():
    params = ArithParams()
    for p in make_problems(params, "train", 2000):
        assert _evaluate(p) == p.answer
        values = [p.start] + [s.after for s in p.steps]
        assert all(0 <= v <= params.max_value for v in values)
        assert len(p.steps) == params.n_ops


def test_difficulty_params_are_honoured():
    params = ArithParams(n_ops=5, max_operand=4, max_value=30, multipliers=[2])
    for p in make_problems(params, "train", 300):
        assert len(p.steps) == 5
        assert all(s.arg <= 4 for s in p.steps if s.op != "*")
        assert all(s.arg == 2 for s in p.steps if s.op == "*")
        assert _evaluate(p) == p.answer


def test_questions_have_gold_and_stable_ids():
    qs = load_arith_split("test", 20)
    assert all(q.task == TaskType.NUMBER and q.gold == str(_evaluate(p)) for q, p in zip(qs, make_problems(ArithParams(), "test", 20), strict=True))
    assert [q.id for q in qs] == [q.id for q in load_arith_split("test", 20)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("level", LEVELS)
def test_every_procedural_rationale_ends_with_the_right_answer(level, fmt):
    for p in make_problems(ArithParams(), "train", 400):
        r = rationale(p, level, fmt)
        assert r.endswith(f"The answer is {p.answer}.")
        ext = extract_answer(r, TaskType.NUMBER)
        assert ext.rule == "answer_is" and ext.value == str(_evaluate(p))


def test_every_equation_in_a_rationale_is_true():
    for p in make_problems(ArithParams(), "train", 300):
        for level in LEVELS:
            for fmt in FORMATS:
                for chain in re.findall(r"(?<!\w)(?<![\w*+/-] )\d+(?: [-+*/] \d+)+(?: = \d+(?: [-+*/] \d+)*)+", rationale(p, level, fmt)):
                    values = {eval(side) for side in chain.split(" = ")}  # noqa: S307 - digits and operators only
                    assert len(values) == 1, (chain, p.text)


def test_levels_grow_in_length():
    problems = make_problems(ArithParams(), "train", 300)
    for fmt in FORMATS:
        means = [sum(len(rationale(p, lv, fmt).split()) for p in problems) / len(problems) for lv in LEVELS]
        assert means == sorted(means), (fmt, means)
        assert means[-1] > 2 * means[0]


def test_level_one_has_no_intermediate_results_and_level_three_has_all():
    for p in make_problems(ArithParams(), "train", 200):
        one = rationale(p, 1, "cot").removesuffix(f"The answer is {p.answer}.")
        assert "=" not in one
        three = rationale(p, 3, "cot")
        assert all(f"= {s.after}" in three for s in p.steps)
        assert "Check:" in rationale(p, 6, "cot")


def test_answer_only_target():
    p = make_problems(ArithParams(), "train", 1)[0]
    assert answer_only(p) == f"The answer is {p.answer}."
