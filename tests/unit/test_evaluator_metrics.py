"""Evaluator scoring and metrics: rows, Wilson CI, summary fields, partial-file handling, backends."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from services.evaluator.errors import EvaluationError
from services.evaluator.evaluate import (
    PARTIAL,
    read_partial,
    resolve_backend,
    resume_fingerprint,
    score_outputs,
    summarize,
)
from services.evaluator.generate import Generation
from shared.config import EvaluationConfig
from shared.datasets.base import Question, TaskType
from shared.stats import wilson_interval


def _q(i: int, gold: str, task: TaskType = TaskType.NUMBER, choices: list[str] | None = None) -> Question:
    return Question(id=f"q{i}", text=f"question {i}", gold=gold, task=task, choices=choices)


def test_score_outputs_rows_have_every_field() -> None:
    qs = [_q(0, "12"), _q(1, "5"), _q(2, "7"), _q(3, "B", TaskType.CHOICE, ["cat", "dog"])]
    gens = [
        Generation("3 * 4 = 12. The answer is 12.", 12),
        Generation("The answer is 6.", 5),
        Generation("I do not know", 4),
        Generation("The answer is (B).", 5),
    ]
    rows = score_outputs(qs, ["p0", "p1", "p2", "p3"], gens)
    assert [r["correct"] for r in rows] == [True, False, False, True]
    assert [r["extracted"] for r in rows][:3] == ["12", "6", None]
    for r, q, g in zip(rows, qs, gens, strict=True):
        assert {"id", "prompt", "output", "extracted", "gold", "correct", "rule", "n_tokens"} <= r.keys()
        assert (r["id"], r["gold"], r["output"], r["n_tokens"]) == (q.id, q.gold, g.text, g.n_tokens)
    assert rows[0]["rule"] and rows[2]["rule"]


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_summarize_fields_and_wilson_interval() -> None:
    rows = [
        {
            "correct": i < 30,
            "extracted": None if i >= 45 else "1",
            "n_tokens": 10 + i % 3,
            "rule": "answer-is",
        }
        for i in range(50)
    ]
    m = summarize(rows, wall_s=4.0, generated_tokens=300, generation_s=2.0)
    assert m["n"] == 50 and m["correct"] == 30 and m["accuracy"] == pytest.approx(0.6)
    lo, hi = _wilson(30, 50)
    assert (m["ci_low"], m["ci_high"]) == pytest.approx((lo, hi))
    assert (m["ci_low"], m["ci_high"]) == pytest.approx((0.4618, 0.7239), abs=1e-4)  # worked by hand
    assert m["extraction_failure_rate"] == pytest.approx(0.1)
    assert m["mean_output_tokens"] == pytest.approx(sum(10 + i % 3 for i in range(50)) / 50)
    assert m["wall_s"] == 4.0 and m["tokens_per_s"] == pytest.approx(150.0)
    assert m["rules"] == {"answer-is": 50}
    empty = summarize([], wall_s=0.0)
    assert (empty["n"], empty["accuracy"], empty["ci_low"], empty["ci_high"]) == (0, 0.0, 0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_read_partial_drops_a_torn_line_and_other_settings(tmp_path: Path) -> None:
    path = tmp_path / PARTIAL
    rows = [{"id": f"q{i}", "output": "x"} for i in range(3)]
    path.write_text(
        json.dumps({"_resume": "abc"})
        + "\n"
        + "".join(json.dumps(r) + "\n" for r in rows)
        + '{"id": "q3", "out'
    )
    done = read_partial(path, "abc")
    assert sorted(done) == ["q0", "q1", "q2"]
    assert path.read_text().endswith("}\n"), "the torn tail is removed so appends start on a clean line"
    assert len(path.read_text().splitlines()) == 4
    assert read_partial(path, "other") == {} and not path.exists()
    assert read_partial(tmp_path / "missing.jsonl", "abc") == {}


def test_fingerprint_ignores_batching_but_not_decoding(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"0" * 10)
    fp = resume_fingerprint(tmp_path, EvaluationConfig(batch_size=8), "auto", "transformers")
    assert fp == resume_fingerprint(
        tmp_path, EvaluationConfig(batch_size=2, sort_by_length=False), "auto", "transformers"
    )
    assert fp != resume_fingerprint(tmp_path, EvaluationConfig(max_new_tokens=7), "auto", "transformers")
    assert fp != resume_fingerprint(tmp_path, EvaluationConfig(num_beams=5), "auto", "transformers")
    assert fp != resume_fingerprint(tmp_path, EvaluationConfig(), "alpaca", "transformers")


def test_backend_selection() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("transformers", cpu) == "transformers"
    assert resolve_backend("auto", cpu) == "transformers"
    with pytest.raises(EvaluationError, match="unknown backend"):
        resolve_backend("tgi", cpu)


def test_vllm_requested_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import services.evaluator.vllm_backend as vb

    monkeypatch.setattr(vb, "vllm_available", lambda: False)
    with pytest.raises(EvaluationError, match="vllm package is not installed"):
        resolve_backend("vllm", torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cuda")) == "transformers"
