"""A tiny trained student for the evaluator tests, built once per test process (offline, ~10 s)."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

OPS = (1, 2, 3, 4)


def arith_questions(n: int, ops: tuple[int, ...] = OPS) -> list:
    """`n` arith test questions cycling through `ops` operations (varied prompt and output lengths)."""
    from shared.datasets.arith import make_problems
    from shared.specs import ArithParams

    per = -(-n // len(ops))
    by_ops = [make_problems(ArithParams(n_ops=k), "test", per) for k in ops]
    return [by_ops[i % len(ops)][i // len(ops)].question() for i in range(n)]


@functools.cache
def tiny_student(steps: int = 100) -> Path:
    """An `init_tiny` size-"xs" student trained `steps` steps on level-3 arith rationales."""
    import torch

    from services.generator.teachers.procedural import rationale
    from services.trainer.recipe import train_sft
    from services.trainer.tiny import init_tiny
    from shared.config import TrainingConfig
    from shared.datasets.arith import make_problems
    from shared.specs import ArithParams

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="cotd-eval-student-"))
    atexit.register(shutil.rmtree, root, True)
    problems = [p for k in OPS for p in make_problems(ArithParams(n_ops=k), "train", 300)]
    pairs = [(p.text, rationale(p, 3)) for p in problems]
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"q": q, "r": r}) + "\n" for q, r in pairs[::3]))
    base = init_tiny(root / "base", corpus=[str(corpus)], size="xs")
    cfg = TrainingConfig(
        lr=6e-3,
        warmup_steps=20,
        max_steps=steps,
        global_batch_size=16,
        micro_batch_size=16,
        from_scratch=True,
        save_every_steps=10**6,
    )
    out = root / "student"
    train_sft(str(base), pairs, out, root / "work", cfg, seed=0, device_setting="cpu")
    return out
