"""A real evaluation killed with SIGKILL resumes: finished items are not regenerated, same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import services.evaluator.evaluate as ev
from services.evaluator.evaluate import PARTIAL, evaluate_model
from shared.config import EvaluationConfig
from tests.unit.evaluator_student import arith_questions, tiny_student

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
N, BATCH = 24, 3

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    import services.evaluator.evaluate as ev
    from shared.config import EvaluationConfig
    from tests.unit.evaluator_student import arith_questions

    generate = ev.generate_batched

    def slow_generate(*a, on_batch, **k):  # slow batches, so that the parent can kill it between two
        def slow_on_batch(idx, gens):
            on_batch(idx, gens)
            time.sleep(0.4)
        return generate(*a, on_batch=slow_on_batch, **k)

    ev.generate_batched = slow_generate
    cfg = EvaluationConfig(batch_size=int(sys.argv[3]), max_new_tokens=40)
    ev.evaluate_model(sys.argv[1], arith_questions(int(sys.argv[4])), Path(sys.argv[2]), cfg, device_setting="cpu")
    """
)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _counting_generate(counter: list[int]):
    """`generate_batched` that records how many prompts it was asked to generate."""
    generate = ev.generate_batched

    def count(model, tokenizer, prompts, *a, **k):
        counter.append(len(prompts))
        return generate(model, tokenizer, prompts, *a, **k)

    return count


@pytest.mark.slow
def test_killed_evaluation_resumes_without_regenerating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    student = tiny_student()
    out = tmp_path / "killed"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(student), str(out), str(BATCH), str(N)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    partial = out / PARTIAL
    deadline = time.monotonic() + 45
    try:
        while time.monotonic() < deadline:  # wait until at least two batches are on disk
            if partial.exists() and len(partial.read_text().splitlines()) >= 1 + 2 * BATCH:
                break
            if child.poll() is not None:
                pytest.fail(
                    f"the evaluation ended before it could be killed: {child.stderr.read().decode()[-2000:]}"
                )
            time.sleep(0.05)
        else:
            pytest.fail("no batch was written in time")
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "predictions.jsonl").exists()
    kept = {r["id"] for r in _rows(partial)[1:]}
    assert 2 * BATCH <= len(kept) < N

    calls: list[int] = []
    monkeypatch.setattr(ev, "generate_batched", _counting_generate(calls))
    questions = arith_questions(N)
    cfg = EvaluationConfig(batch_size=BATCH, max_new_tokens=40)
    resumed = evaluate_model(student, questions, out, cfg, device_setting="cpu")
    assert sum(calls) == N - len(kept), "only the unfinished items are generated again"
    assert resumed["resumed"] == len(kept) and resumed["n"] == N
    assert not partial.exists()

    calls.clear()
    fresh = evaluate_model(student, questions, tmp_path / "fresh", cfg, device_setting="cpu")
    assert sum(calls) == N
    assert _rows(out / "predictions.jsonl") == _rows(tmp_path / "fresh" / "predictions.jsonl")
    assert [r["id"] for r in _rows(out / "predictions.jsonl")] == [q.id for q in questions]
    for key in ("accuracy", "ci_low", "ci_high", "n", "extraction_failure_rate", "mean_output_tokens"):
        assert resumed[key] == fresh[key]


def test_other_settings_do_not_reuse_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    student = tiny_student()
    questions = arith_questions(4)
    out = tmp_path / "out"
    out.mkdir()
    stale = {"id": questions[0].id, "prompt": "p", "output": "The answer is 1.", "extracted": "1",
             "gold": questions[0].gold, "correct": False, "rule": "x", "n_tokens": 3}  # fmt: skip
    (out / PARTIAL).write_text(json.dumps({"_resume": "some-other-run"}) + "\n" + json.dumps(stale) + "\n")
    calls: list[int] = []
    monkeypatch.setattr(ev, "generate_batched", _counting_generate(calls))
    m = evaluate_model(
        student, questions, out, EvaluationConfig(batch_size=4, max_new_tokens=8), device_setting="cpu"
    )
    assert sum(calls) == 4 and m["resumed"] == 0
