"""`cotd data import-paper` on the paper's released folder: every file imported, the rest named."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from shared.cli import cli
from shared.cotset import read_training_pairs


def test_import_paper_folder(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "paper-cot"
    out = tmp_path / "imported"
    res = CliRunner().invoke(cli, ["data", "import-paper", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "unclassified: dataset_info.json" in res.output
    summary = json.loads((out / "import.json").read_text())
    files = sorted(p.name for p in src.iterdir() if p.is_file())
    assert sorted([i["file"] for i in summary["imported"]] + summary["unclassified"]) == files
    assert summary["unclassified"] == ["dataset_info.json"]
    by_file = {i["file"]: i for i in summary["imported"]}
    m = json.loads((out / by_file["SVAMP_ChatGPT_level6_ranked.json"]["dir"] / "manifest.json").read_text())
    assert (m["dataset"], m["teacher"], m["level"], m["format"], m["teacher_kind"]) == ("svamp", "gpt-4o", 6, "cot", "recorded")
    assert round(m["stats"]["mean_words"]) == 81 and m["stats"]["teacher_accuracy"] > 0.9
    bsm = by_file["0_SVAMP_chatgpt_level3BSM.json"]
    assert (bsm["format"], bsm["level"]) == ("subquestion", 3)
    human = json.loads((out / by_file["math_human.json"]["dir"] / "manifest.json").read_text())
    assert human["teacher"] == "human" and human["level"] is None
    first = (out / by_file["math_human.json"]["dir"] / "cot.jsonl").read_text().splitlines()[0]
    assert "February" in json.loads(first)["rationale"]  # the human solution, not the chatgpt_output column
    assert len(read_training_pairs(out / bsm["dir"])) == 699
