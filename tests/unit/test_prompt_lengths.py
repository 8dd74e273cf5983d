"""The paper's length table and the shape check of our prompts against it (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.generator.lengths import PAPER_MEAN_WORDS, length_report, paper_level_words


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("svamp/gpt-4o", "SVAMP_ChatGPT_level{}_ranked.json"),
        ("strategyqa/llama-3-70b", "stqa_llama_level{}_ranked.json"),
    ],
)
def test_paper_table_is_the_released_files(shared_data: Path, name: str, file: str) -> None:
    for level, words in PAPER_MEAN_WORDS[name].items():
        items = json.loads((shared_data / "paper-cot" / file.format(level)).read_text())
        mean = sum(len(it["output"].split()) for it in items) / len(items)
        assert mean == pytest.approx(words, abs=0.05), (name, level, mean)


def test_report_ratios_rising_and_span() -> None:
    paper = PAPER_MEAN_WORDS["svamp/gpt-4o"]
    ours = {lv: 2 * w for lv, w in paper.items()}
    rep = length_report(ours, paper)
    assert rep["strictly_rising"] and rep["span"] == "L6/L1"
    assert all(r == pytest.approx(2.0) for r in rep["ratio_to_paper"].values())
    assert rep["span_ratio"] == pytest.approx(81.0 / 35.3) and rep["span_within_tolerance"]
    flat = length_report({lv: 40.0 for lv in paper}, paper)
    assert not flat["strictly_rising"] and not flat["span_within_tolerance"]  # 1.0 < 2.31 / 2
    dip = length_report({**ours, 4: ours[3]}, paper)
    assert not dip["strictly_rising"] and dip["span_within_tolerance"]


def test_level_words_for_unwritten_rationales() -> None:
    words = paper_level_words()
    assert words[1] == pytest.approx((35.3 + 28.1) / 2) and words[6] == pytest.approx((81.0 + 125.3) / 2)
    assert list(words.values()) == sorted(words.values())
