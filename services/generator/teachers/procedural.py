"""The procedural teacher: exact rationales for `arith` at six levels and four formats.

Level 1 is a one-line formula without intermediate results; level 3 writes every
intermediate; level 6 spells out every elementary step and then checks the result.
Every rationale ends "The answer is X".
"""

from __future__ import annotations

from shared.datasets.arith import ArithProblem, Step
from shared.teacher_kinds import PROCEDURAL_VERSION as PROCEDURAL_VERSION  # bump it when rationales change

_OP_WORD = {"+": "add", "-": "subtract", "*": "multiply by"}


def _formula(p: ArithProblem) -> str:
    expr = str(p.start)
    for s in p.steps:
        if s.op == "*" and any(c in expr for c in "+-"):
            expr = f"({expr})"
        expr = f"{expr} {s.op} {s.arg}"
    return expr


def _eq(s: Step) -> str:
    return f"{s.before} {s.op} {s.arg} = {s.after}"


def _elementary(s: Step) -> str:
    """One operation broken into elementary steps (through ten, repeated addition)."""
    if s.op == "*":
        return f"{s.before} * {s.arg} = {' + '.join([str(s.before)] * s.arg)} = {s.after}"
    if s.op == "+" and s.before < 10 < s.after:
        fill = 10 - s.before
        return f"{s.before} + {s.arg} = {s.before} + {fill} + {s.arg - fill} = 10 + {s.arg - fill} = {s.after}"
    if s.op == "-" and s.after < 10 < s.before:
        drop = s.before - 10
        return f"{s.before} - {s.arg} = {s.before} - {drop} - {s.arg - drop} = 10 - {s.arg - drop} = {s.after}"
    return _eq(s)


def _groups(p: ArithProblem) -> list[list[Step]]:
    """Runs of additive steps merged, multiplications alone (the level-2 granularity)."""
    groups: list[list[Step]] = []
    for s in p.steps:
        if groups and s.op != "*" and groups[-1][-1].op != "*":
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def _units(p: ArithProblem, level: int) -> list[tuple[str, str]]:
    """(sub-question, statement) pairs at a granularity level."""
    obj = p.obj
    if level == 1:
        return [(f"How many {obj} at the end?", f"{_formula(p)}.")]
    if level == 2:
        out = []
        for g in _groups(p):
            expr = f"{g[0].before} " + " ".join(f"{s.op} {s.arg}" for s in g)
            out.append((f"How many {obj} after that?", f"{expr} = {g[-1].after}."))
        return out
    if level == 3:
        return [(f"How many {obj} after that?", f"{_eq(s)}.") for s in p.steps]
    units = [(f"How many {obj} at the start?", f"{p.name} starts with {p.start} {obj}.")] if level >= 4 else []
    for i, s in enumerate(p.steps, 1):
        phrase = s.phrase(p.name)
        q = f"How many {obj} after {phrase}?"
        if level == 4:
            units.append((q, f"{phrase[0].upper() + phrase[1:]}, so {_eq(s)}."))
        else:
            calc = _elementary(s) if level == 6 else _eq(s)
            units.append((q, f"Step {i}: {phrase} means we {_OP_WORD[s.op]} {s.arg}: {calc}."))
    if level == 6:
        inv = {"+": "-", "-": "+", "*": "/"}
        v, back = p.answer, []
        for s in reversed(p.steps):
            back.append(f"{v} {inv[s.op]} {s.arg} = {s.before}")
            v = s.before
        units.append(("Is the result right?", f"Check: {', '.join(back)}, which is the start, so it is right."))
    return units


def _symbolic(p: ArithProblem, level: int) -> str:
    if level == 1:
        return f"Let x = {p.start}. y = {_formula(p).replace(str(p.start), 'x', 1)}."
    parts = [f"Let x0 = {p.start}."]
    for i, s in enumerate(p.steps, 1):
        rhs = f"x{i - 1} {s.op} {s.arg}"
        if level == 2 and i < len(p.steps):
            continue
        if level == 2:
            rhs = _formula(p).replace(str(p.start), "x0", 1)
            parts.append(f"x{i} = {rhs} = {s.after}.")
            break
        detail = _elementary(s) if level >= 6 else _eq(s)
        parts.append(f"x{i} = {rhs}; {detail}." if level >= 4 else f"x{i} = {rhs} = {s.after}.")
    if level >= 5:
        parts.append(f"So x{len(p.steps)} is the count of {p.obj}.")
    return " ".join(parts)


def rationale(p: ArithProblem, level: int, fmt: str = "cot") -> str:
    """The exact rationale for one problem at a level (1-6) and format."""
    if not 1 <= level <= 6:
        raise ValueError(f"level must be 1..6, got {level}")
    units = _units(p, level)
    if fmt == "cot":
        body = " ".join(stmt for _, stmt in units)
    elif fmt == "subquestion":
        body = " ".join(f"{q} {stmt}" for q, stmt in units)
    elif fmt == "rar":
        ops = ", ".join(f"{_OP_WORD[s.op]} {s.arg}" for s in p.steps)
        body = f"Rephrased: start at {p.start}, then {ops}. What is the result? " + " ".join(s for _, s in units)
    elif fmt == "symbolic":
        body = _symbolic(p, level)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return f"{body} The answer is {p.answer}."


def answer_only(p: ArithProblem) -> str:
    """The answer-only baseline target."""
    return f"The answer is {p.answer}."
