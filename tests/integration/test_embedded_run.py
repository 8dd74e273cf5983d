"""`cotd run` end-to-end on a tiny grid: artifacts, results.json, report, and a rerun that recomputes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from shared.cli import cli

GRID = {
    "name": "tiny-e2e",
    "datasets": [{"name": "arith", "train_size": 400, "test_size": 16}],
    "teachers": [{"name": "procedural", "kind": "procedural"}, {"name": "answer-only", "kind": "answer-only"}],
    "levels": [1, 3],
    "formats": ["cot"],
    "students": [{"name": "xs", "model": "tiny:xs"}],
    "training": {
        "lr": 6e-3,
        "max_steps": 12,
        "warmup_steps": 2,
        "global_batch_size": 8,
        "micro_batch_size": 8,
        "cutoff": 256,
        "from_scratch": True,
        "save_every_steps": 5,
    },
    "evaluation": {"batch_size": 16, "max_new_tokens": 24},
    "seeds": [7],
}
CELL_FIELDS = {
    "dataset", "teacher", "teacher_kind", "level", "format", "student", "seed", "accuracy", "ci_low", "ci_high", "n",
    "extraction_failure_rate", "mean_output_tokens", "cot_key", "checkpoint_key", "eval_key",
}


@pytest.mark.integration
def _artifact_files(store: Path) -> dict[str, tuple[int, int]]:
    """Every file of the store with its (mtime in ns, size): a recomputed artifact changes them."""
    return {str(p.relative_to(store)): (p.stat().st_mtime_ns, p.stat().st_size) for p in store.rglob("*") if p.is_file()}


def test_tiny_grid_end_to_end_and_rerun(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    out = tmp_path / "run"
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(grid), "--out", str(out), "--jobs", "1"])
    assert first.exit_code == 0, first.output
    results = json.loads((out / "results.json").read_text())
    assert results["grid"]["name"] == "tiny-e2e"
    cells = results["cells"]
    assert len(cells) == 3
    for c in cells:
        assert CELL_FIELDS <= set(c), CELL_FIELDS - set(c)
        assert c["status"] == "done" and c["n"] == 16
        assert 0.0 <= c["ci_low"] <= c["accuracy"] <= c["ci_high"] <= 1.0
        store = out / "artifacts"
        assert (store / "cotsets" / c["cot_key"] / "manifest.json").exists()
        assert (store / "checkpoints" / c["checkpoint_key"] / "model.safetensors").exists()
        preds = (store / "evals" / c["eval_key"] / "predictions.jsonl").read_text().splitlines()
        assert len(preds) == 16
        metrics = json.loads((store / "evals" / c["eval_key"] / "metrics.json").read_text())
        assert metrics["accuracy"] == c["accuracy"]
    assert {c["level"] for c in cells} == {1, 3, None}
    for name in ("report.md", "accuracy_by_level.png", "report.html"):
        assert (out / name).exists(), name
    assert not list((out / "artifacts").glob(".tmp/*")), "nothing half-written is left"

    before = _artifact_files(out / "artifacts")
    second = runner.invoke(cli, ["run", str(grid), "--out", str(out), "--jobs", "1"])
    assert second.exit_code == 0, second.output
    assert "0 artifacts computed" in second.output
    assert second.output.count("cached, not recomputed") == 3 + 3 + 3  # 3 sets, 3 checkpoints, 3 evals
    assert json.loads((out / "results.json").read_text())["cells"] == cells
    assert _artifact_files(out / "artifacts") == before, "the rerun rewrote no artifact file"
