"""`cotd grid plan`: task counts after de-duplication and cache hits, tokens, GPU-hours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from services.generator.stats import fallback_tokens
from services.generator.teachers.procedural import rationale
from shared.artifacts import LocalStore
from shared.cli import cli
from shared.datasets.arith import make_problems
from shared.grid import expand, load_grid, parse_grid
from shared.orchestration.plan import (
    BPE_PER_REGEX_TOKEN,
    TEMPLATE_TOKENS,
    load_throughput,
    plan_grids,
    published_keys,
)
from shared.specs import ArithParams
from tests.conftest import REPO_ROOT

ARITH = {"n_ops": 2, "max_operand": 5, "max_value": 9}


def _grid(name: str, levels: list[int], seeds: list[int]) -> dict:
    return {
        "name": name,
        "datasets": [{"name": "arith", "train_size": 40, "test_size": 10, "arith": ARITH}],
        "teachers": [
            {"name": "procedural", "kind": "procedural"},
            {"name": "answer-only", "kind": "answer-only"},
        ],
        "levels": levels,
        "students": [{"name": "tiny-s", "model": "tiny:s"}],
        "training": {"max_steps": 5, "global_batch_size": 4, "micro_batch_size": 4, "from_scratch": True},
        "seeds": seeds,
    }


def _tok(text: str) -> float:
    return fallback_tokens(text) * BPE_PER_REGEX_TOKEN


def test_counts_deduplicate_across_grids_and_take_off_cache_hits(tmp_path: Path) -> None:
    from shared.orchestration.stages import generate_stage

    a = parse_grid(_grid("a", [1, 3], [1, 2]))
    b = parse_grid(_grid("b", [3, 6], [2]))  # L3 seed 2 and answer-only seed 2 are also in `a`
    cells = {c.key for g in (a, b) for c in expand(g)}
    plan = plan_grids([a, b])
    assert plan.cells == len(cells) == 6 + 3 - 2
    assert (plan.generate.unique, plan.train.unique, plan.evaluate.unique) == (4, 7, 7)
    assert plan.server_generate == 0 and plan.teacher_tokens.value == 0

    store = LocalStore(tmp_path / "store")
    generate_stage(expand(a)[0].cot, store)  # one CoT set already published
    cached = plan_grids([a, b], published_keys(str(tmp_path / "store")))
    assert (cached.generate.cached, cached.generate.to_run) == (1, 3)
    assert cached.train.to_run == 7


def test_training_tokens_and_hours_from_the_throughput_table() -> None:
    g = parse_grid(_grid("a", [3], [1]))
    probs = make_problems(ArithParams(**ARITH), "train", 200)
    from shared.datasets.splits import load_split

    qs = load_split(g.datasets[0], "train")
    q_tok = sum(_tok(q.text) for q in qs) / len(qs)
    r3 = sum(_tok(rationale(p, 3)) for p in probs) / len(probs)
    r0 = _tok("The answer is 42")
    want = sum(5 * 4 * (q_tok + r + TEMPLATE_TOKENS) for r in (r3, r0))
    table = [
        {"stage": "train", "method": "full", "gpu": "X", "parameters": 157_000, "tokens_per_s": 1000.0,
         "measured": True, "source": "test"},
        {"stage": "evaluate", "method": "greedy", "gpu": "X", "parameters": 1_570_000, "tokens_per_s": 10.0,
         "measured": True, "source": "test"},
    ]  # fmt: skip
    plan = plan_grids([g], throughput=table, gpus=2)
    assert plan.training_tokens.value == pytest.approx(want)
    assert not plan.training_tokens.estimated  # every length counted from the data
    assert plan.train_gpu_hours.value == pytest.approx(want / 1000.0 / 3600)
    assert not plan.train_gpu_hours.estimated  # the student's own size was measured
    # evaluation: scaled from a model 10x larger, so 10x the tokens/s, and marked as an estimate
    gen = sum(min(r, 200) for r in (r3, r0)) * 10
    assert plan.evaluate_gpu_hours.value == pytest.approx(gen / 100.0 / 3600)
    assert plan.evaluate_gpu_hours.estimated
    assert plan.hours_on_gpus.value == pytest.approx(plan.gpu_hours.value / 2)


def test_the_measured_table_holds_the_h200_reference() -> None:
    entries = load_throughput()
    full = next(e for e in entries if e["stage"] == "train" and e["method"] == "full")
    bench = json.loads((REPO_ROOT / "bench/results/gpu_train.json").read_text())
    assert full["tokens_per_s"] == next(r for r in bench if r["run"] == "train_full")["tokens_per_s"]


def test_live_teachers_cost_teacher_tokens(tmp_path: Path) -> None:
    spec = _grid("live", [1, 6], [1])
    spec["datasets"] = [{"name": "svamp", "train_size": 50, "test_size": 20}]
    spec["teachers"] = [{"name": "t", "kind": "tgi", "model": "m", "base_url": "http://127.0.0.1:1"}]
    plan = plan_grids([parse_grid(spec)])
    assert plan.server_generate == 2
    assert plan.teacher_tokens.value > 2 * 50 * 31.5  # prompts and at least the paper's L1 words
    assert plan.teacher_tokens.estimated and plan.training_tokens.estimated


def test_cli_table_and_json(shared_data: Path, tmp_path: Path) -> None:
    grid = REPO_ROOT / "grids/paper-svamp-formats.yaml"
    runner = CliRunner()
    res = runner.invoke(cli, ["grid", "plan", str(grid), "--json", "--gpus", "4"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    n = len(expand(load_grid(grid)))
    assert doc["cells"] == n and doc["evaluate"]["to_run"] == n and doc["gpus"] == 4
    assert doc["generate"]["unique"] == 8 and doc["training_tokens"]["value"] > 0
    table = runner.invoke(cli, ["grid", "plan", str(grid)])
    assert (
        table.exit_code == 0 and "hours on 4 GPUs" not in table.output and "hours on 8 GPUs" in table.output
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_grid("x", [7], [1])))
    res = runner.invoke(cli, ["grid", "plan", str(bad)])
    assert res.exit_code == 1 and "levels" in res.output
