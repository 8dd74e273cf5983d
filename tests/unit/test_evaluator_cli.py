"""`cotd evaluate` through click's CliRunner: a model on a data file, scored predictions, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from services.evaluator.evaluate import PARTIAL
from shared.cli import cli
from tests.unit.evaluator_student import tiny_student

torch.set_num_threads(1)

SVAMP = [
    {
        "ID": f"t-{i}",
        "Body": f"Ben has {a} pens. He gets {b} more.",
        "Question": "How many pens does Ben have now?",
        "Answer": float(a + b),
    }  # fmt: skip
    for i, (a, b) in enumerate([(3, 2), (7, 1), (4, 4), (9, 3), (2, 6)])
]
METRIC_KEYS = {
    "accuracy",
    "ci_low",
    "ci_high",
    "n",
    "extraction_failure_rate",
    "mean_output_tokens",
    "wall_s",
    "tokens_per_s",
}


def _write(path: Path, items: list[dict]) -> Path:
    path.write_text(json.dumps(items))
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_evaluate_a_model_on_a_data_file(tmp_path: Path) -> None:
    data = _write(tmp_path / "svamp_test.json", SVAMP)
    out = tmp_path / "eval"
    args = ["--model", str(tiny_student()), "--dataset", "svamp", "--data-file", str(data), "--out", str(out)]
    res = CliRunner().invoke(
        cli, ["evaluate", *args, "--batch-size", "2", "--max-new-tokens", "24", "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    assert METRIC_KEYS <= metrics.keys() and metrics["n"] == 5
    assert json.loads((out / "metrics.json").read_text()) == metrics
    rows = _rows(out / "predictions.jsonl")
    assert [r["gold"] for r in rows] == ["5", "8", "8", "12", "8"]
    for r in rows:
        assert {"id", "prompt", "output", "extracted", "gold", "correct", "rule"} <= r.keys()
        assert r["prompt"].startswith("Q: Ben has") and r["n_tokens"] <= 24
    assert not (out / PARTIAL).exists()


def test_a_malformed_item_is_one_line_naming_file_and_index_and_keeps_partial_work(tmp_path: Path) -> None:
    bad = _write(
        tmp_path / "svamp_bad.json", [*SVAMP[:3], {"ID": "t-9", "Body": "no question field"}, SVAMP[4]]
    )
    out = tmp_path / "eval"
    out.mkdir()
    partial = out / PARTIAL
    partial.write_text('{"_resume": "earlier"}\n{"id": "x", "output": "kept"}\n')
    before = partial.read_bytes()
    args = ["--model", str(tiny_student()), "--dataset", "svamp", "--data-file", str(bad), "--out", str(out)]
    res = CliRunner().invoke(cli, ["evaluate", *args])
    assert res.exit_code != 0
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    message = res.output.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("Error: ")
    assert "svamp_bad.json" in message[0] and "index 3" in message[0] and "Question" in message[0]
    assert partial.read_bytes() == before, "an interrupted evaluation's partial predictions are kept"
    assert not (out / "predictions.jsonl").exists()

    jsonl = tmp_path / "svamp_bad.jsonl"
    jsonl.write_text(json.dumps(SVAMP[0]) + "\n{broken\n")
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(tiny_student()),
            "--dataset",
            "svamp",
            "--data-file",
            str(jsonl),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code != 0 and "svamp_bad.jsonl" in res.output and "line 2" in res.output


def test_vllm_requested_without_vllm_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.evaluator.vllm_backend as vb

    monkeypatch.setattr(vb, "vllm_available", lambda: False)
    data = _write(tmp_path / "svamp_test.json", SVAMP)
    args = [
        "--model",
        str(tiny_student()),
        "--dataset",
        "svamp",
        "--data-file",
        str(data),
        "--out",
        str(tmp_path / "o"),
    ]
    res = CliRunner().invoke(cli, ["evaluate", *args, "--backend", "vllm"])
    assert res.exit_code != 0 and "vllm package is not installed" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_score_predictions_with_named_fields(tmp_path: Path) -> None:
    pairs = [(1, 2), (5, 5), (3, 4)]
    qs = [f"Ann has {a} cups. She buys {b} more. How many cups now?" for a, b in pairs]
    gold = _write(
        tmp_path / "gold.json",
        [{"problem": q, "target": str(a + b)} for q, (a, b) in zip(qs, pairs, strict=True)],
    )
    preds = _write(
        tmp_path / "preds.json",
        [
            {"problem": qs[0], "response": "1 + 2 = 3. The answer is 3."},
            {"problem": qs[1], "response": "5 + 5 = 11. The answer is 11."},
            {"problem": qs[2], "response": "no idea"},
        ],
    )
    out = tmp_path / "scored"
    args = ["--predictions", str(preds), "--dataset", "svamp", "--gold", str(gold), "--out", str(out)]
    fields = ["--question-field", "problem", "--output-field", "response", "--gold-field", "target"]
    res = CliRunner().invoke(cli, ["evaluate", *args, *fields])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["n"], m["correct"]) == (3, 1)
    assert m["extraction_failure_rate"] == pytest.approx(1 / 3)
    assert [r["correct"] for r in _rows(out / "predictions.jsonl")] == [True, False, False]

    # an item without the output field is scored wrong and counted (the paper's files are not uniform)
    gaps = _write(
        tmp_path / "preds_gap.json", [{"problem": qs[0], "response": "The answer is 3."}, {"problem": qs[1]}]
    )
    res = CliRunner().invoke(cli, ["evaluate", *args[:1], str(gaps), *args[2:], *fields])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["n"], m["correct"], m["n_no_output"]) == (2, 1, 1)

    # an item without its question cannot be joined to gold: one line naming the file and the index
    broken = _write(tmp_path / "preds_bad.json", [{"problem": qs[0], "response": "3"}, {"response": "8"}])
    res = CliRunner().invoke(cli, ["evaluate", *args[:1], str(broken), *args[2:], *fields])
    assert res.exit_code != 0 and "preds_bad.json" in res.output and "index 1" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_exactly_one_of_model_or_predictions(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["evaluate", "--dataset", "svamp", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "exactly one of --model or --predictions" in res.output


def test_evaluate_uses_the_template_the_checkpoint_records(tmp_path: Path) -> None:
    import shutil

    from services.trainer.models import CHECKPOINT_INFO, read_info
    from services.trainer.templates import ALPACA_SYSTEM

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_student(), ckpt)
    info = read_info(ckpt)
    assert info is not None and info.template == "tokenizer"  # trained with auto: its Q:/A: chat template
    data = _write(tmp_path / "svamp_test.json", SVAMP[:2])
    base = ["evaluate", "--model", str(ckpt), "--dataset", "svamp", "--data-file", str(data)]
    base += ["--max-new-tokens", "2", "--device", "cpu"]

    def prompts(*extra: str) -> list[str]:
        out = tmp_path / f"eval{len(list(tmp_path.iterdir()))}"
        res = CliRunner().invoke(cli, [*base, "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        return [r["prompt"] for r in _rows(out / "predictions.jsonl")]

    assert all(p.startswith("Q: ") for p in prompts())
    (ckpt / CHECKPOINT_INFO).write_text(info.model_copy(update={"template": "alpaca"}).model_dump_json())
    assert all(p.startswith(ALPACA_SYSTEM) for p in prompts())  # the recorded template, not auto
    assert all(p.startswith(ALPACA_SYSTEM) for p in prompts("--template", "auto"))
    assert all(p.startswith("Q: ") for p in prompts("--template", "tokenizer"))  # told otherwise
    res = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "bad"), "--template", "chatml"])
    assert res.exit_code == 1 and "template 'chatml' needs the token <|im_start|>" in res.output
    assert res.output.strip().splitlines()[-1].startswith("Error: template 'chatml'")  # one line
