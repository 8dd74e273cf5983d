"""Our six-level prompts with a real model behind `cotd teacher serve`: lengths rise as the paper's do.

SmolLM2-135M-Instruct writes SVAMP rationales at levels 1-6 for two train questions through the
TGI protocol (the tgi teacher, chat route). A 135M model does not write what GPT-4o wrote, so this
checks the shape only: mean words strictly rising, and L6/L1 within a factor 2 of the paper's.
`bench/prompt_lengths.py` is the larger measurement (more questions, StrategyQA too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.generator.build import build_cotset
from services.generator.lengths import PAPER_MEAN_WORDS, length_report
from services.generator.prompts import LEVELS, PROMPT_VERSION
from shared.specs import CotSetSpec, DatasetRef, TeacherSpec
from tests.integration.services import teacher_server

pytestmark = [pytest.mark.slow]


def test_six_levels_rise_like_the_papers(smollm2: Path, shared_data: Path, tmp_path: Path) -> None:
    ref = DatasetRef(
        name="svamp", train_file=str(shared_data / "paper-cot/SVAMP_only_ans.json"), train_size=2
    )
    with teacher_server(smollm2, tmp_path, threads=2, timeout=600) as url:
        teacher = TeacherSpec(name="smollm2", kind="tgi", model=str(smollm2), base_url=url, route="chat",
                              max_new_tokens=240, concurrency=2, timeout_s=900, max_retries=1)  # fmt: skip
        words = {}
        for level in LEVELS:
            spec = CotSetSpec(
                dataset=ref, teacher=teacher, level=level, format="cot", prompt_version=PROMPT_VERSION
            )
            stats = build_cotset(spec, tmp_path / f"w{level}", tmp_path / f"o{level}")["stats"]
            assert stats["failed"] == 0, level
            words[level] = stats["mean_words"]
    rep = length_report(words, PAPER_MEAN_WORDS["svamp/gpt-4o"])
    assert rep["strictly_rising"], rep["mean_words"]
    assert rep["span_within_tolerance"], (rep["span_ratio"], rep["paper_span_ratio"])
