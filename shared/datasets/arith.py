"""The built-in `arith` dataset: seeded multi-step arithmetic word problems.

Every problem starts from a small count and applies `n_ops` operations (add k, take away k,
double/triple), keeping every intermediate in 0..max_value. Train and test never share a
problem structure: a structure's hash decides its split.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from shared.config import MAX_SEED
from shared.datasets.base import Question, TaskType, normalize_text, question_id

NAMES = ("Ann", "Ben", "Cal", "Dee")
OBJECTS = ("apples", "pens", "cards", "coins")
TEST_SHARE = 10  # one structure in TEST_SHARE goes to test


class ArithParams(BaseModel):
    """Difficulty of the built-in `arith` dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_ops: int = Field(3, ge=1, le=6, description="Operations per problem.")
    max_operand: int = Field(9, ge=1, le=99, description="Largest added/subtracted operand.")
    max_value: int = Field(20, ge=2, le=999, description="Every intermediate result stays in 0..max_value.")
    multipliers: list[int] = Field(default_factory=lambda: [2, 3], description="Allowed multipliers.")
    seed: int = Field(0, ge=0, lt=MAX_SEED, description="Generator seed, below 2**32 (train and test never overlap).")


@dataclass(frozen=True)
class Step:
    """One operation: `op` is '+', '-' or '*'; `arg` its operand; `before`/`after` the counts."""

    op: str
    arg: int
    before: int
    after: int

    def phrase(self, name: str) -> str:
        """The step in words, as the problem states it."""
        if self.op == "+":
            return f"{name} gets {self.arg} more"
        if self.op == "-":
            return f"{name} gives away {self.arg}"
        return f"the number of them {'doubles' if self.arg == 2 else 'triples'}"


@dataclass(frozen=True)
class ArithProblem:
    """One arith problem with its structure, which the procedural teacher renders."""

    start: int
    steps: tuple[Step, ...]
    name: str
    obj: str

    @property
    def answer(self) -> int:
        """The final count."""
        return self.steps[-1].after

    @property
    def text(self) -> str:
        """The word problem."""
        parts = [f"{self.name} has {self.start} {self.obj}."]
        for s in self.steps:
            p = s.phrase(self.name)
            parts.append(p[0].upper() + p[1:] + ".")
        parts.append(f"How many {self.obj} does {self.name} have now?")
        return normalize_text(" ".join(parts))

    def question(self) -> Question:
        """The problem as a dataset Question."""
        return Question(id=question_id("arith", self.text), text=self.text, gold=str(self.answer), task=TaskType.NUMBER)


def _structure_split(start: int, steps: tuple[Step, ...]) -> str:
    sig = f"{start}|" + "|".join(f"{s.op}{s.arg}" for s in steps)
    h = int(hashlib.sha1(sig.encode()).hexdigest()[:8], 16)
    return "test" if h % TEST_SHARE == 0 else "train"


def _random_problem(rng: random.Random, p: ArithParams) -> ArithProblem:
    while True:
        value = rng.randint(1, p.max_operand)
        start, steps = value, []
        for _ in range(p.n_ops):
            options: list[tuple[str, int]] = []
            options += [("+", k) for k in range(1, p.max_operand + 1) if value + k <= p.max_value]
            options += [("-", k) for k in range(1, p.max_operand + 1) if value - k >= 0]
            options += [("*", m) for m in p.multipliers if 0 < value * m <= p.max_value]
            if not options:
                break
            # Weigh the three kinds of operation equally.
            kinds = sorted({o for o, _ in options})
            kind = rng.choice(kinds)
            op, arg = rng.choice([o for o in options if o[0] == kind])
            after = value + arg if op == "+" else value - arg if op == "-" else value * arg
            steps.append(Step(op, arg, value, after))
            value = after
        if len(steps) == p.n_ops:
            return ArithProblem(start, tuple(steps), rng.choice(NAMES), rng.choice(OBJECTS))


def make_problems(params: ArithParams, split: str, n: int) -> list[ArithProblem]:
    """`n` problems of `split` ("train" or "test"), deterministic for the params.

    Test problems are distinct; train problems may share a structure with other names.
    """
    if split not in ("train", "test"):
        raise ValueError(f"arith: unknown split {split!r} (train or test)")
    rng = random.Random(f"arith-{params.seed}-{split}")
    out: list[ArithProblem] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"arith: only {len(out)} distinct {split} problems exist for these params, asked {n}")
        prob = _random_problem(rng, params)
        if _structure_split(prob.start, prob.steps) != split:
            continue
        if split == "test":
            if prob.text in seen:
                continue
            seen.add(prob.text)
        out.append(prob)
    return out


DEFAULT_SIZES = {"train": 20_000, "test": 500}


def load_arith_split(split: str, limit: int | None = None, params: ArithParams | None = None) -> list[Question]:
    """The arith questions of a split (default sizes: 20k train, 500 test)."""
    n = limit or DEFAULT_SIZES[split]
    return [p.question() for p in make_problems(params or ArithParams(), split, n)]


generate = load_arith_split
"""The registry's loader of a generated dataset."""
