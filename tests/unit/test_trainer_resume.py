"""Resumption: a run stopped or SIGKILLed at step k and rerun equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from services.trainer.recipe import train_sft
from shared.config import TrainingConfig
from tests.unit.tiny_student import tiny_student

torch.set_num_threads(1)

PAIRS = [
    (f"What is {a} - {b}?", f"{a} - {b} = {a - b}. The answer is {a - b}")
    for a in range(5, 15)
    for b in range(1, 5)
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_student(tmp_path_factory.mktemp("tiny"), PAIRS)


def cfg(**kw) -> TrainingConfig:
    """8 steps over 40 examples = 2 epochs with length-grouped, shuffled micro-batches."""
    return TrainingConfig(
        **(
            {
                "lr": 3e-3,
                "max_steps": 8,
                "global_batch_size": 10,
                "micro_batch_size": 5,
                "save_every_steps": 2,
                "from_scratch": True,
            }
            | kw
        )
    )


def state(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    name = (
        "adapter_model.safetensors" if (out / "adapter_model.safetensors").exists() else "model.safetensors"
    )
    return load_file(str(out / name))


def log_losses(work: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["loss"]) for r in map(json.loads, (work / "train_log.jsonl").read_text().splitlines())
    ]


@pytest.fixture(scope="module")
def reference(base: Path, tmp_path_factory) -> dict:
    """Uninterrupted runs (full, and LoRA with dropout) to compare against."""
    root = tmp_path_factory.mktemp("ref")
    full = train_sft(str(base), PAIRS, root / "full", root / "wf", cfg(), seed=7)
    lora_cfg = cfg(method="lora", from_scratch=False, lora_r=4, lora_dropout=0.3)
    lora = train_sft(str(base), PAIRS, root / "lora", root / "wl", lora_cfg, seed=7)
    return {"full": (full, state(root / "full")), "lora": (lora, state(root / "lora")), "lora_cfg": lora_cfg}


def assert_same(summary_losses: list[float], weights: dict, ref: tuple[dict, dict]) -> None:
    assert summary_losses == pytest.approx(ref[0]["losses"], rel=1e-5, abs=1e-6)
    for k, v in ref[1].items():
        torch.testing.assert_close(weights[k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_stop_and_resume_matches_uninterrupted(
    base: Path, tmp_path: Path, reference: dict, method: str
) -> None:
    c = cfg() if method == "full" else reference["lora_cfg"]
    first = train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "w", c, seed=7, stop_after=3)
    assert not first["complete"] and first["steps"] == 3
    second = train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "w", c, seed=7)
    assert second["complete"] and second["resumed_from"] == 3 and second["steps"] == 8
    assert_same(first["losses"] + second["losses"], state(tmp_path / "out"), reference[method])
    assert [s for s, _ in log_losses(tmp_path / "w")] == list(range(1, 9))


CHILD = """
import sys, time, torch
torch.set_num_threads(1)
from pathlib import Path
from services.trainer import loss
from services.trainer.recipe import train_sft
from shared.config import TrainingConfig
real = loss.ResponseLoss.forward
def forward(self, *a):
    time.sleep(0.15)  # slow enough to be killed mid-run
    return real(self, *a)
loss.ResponseLoss.forward = forward
pairs = [tuple(p) for p in __import__("json").loads(Path(sys.argv[2]).read_text())]
cfg = TrainingConfig.model_validate_json(Path(sys.argv[3]).read_text())
train_sft(sys.argv[1], pairs, Path(sys.argv[4]) / "out", Path(sys.argv[4]) / "w", cfg, seed=7)
"""


def test_sigkill_mid_run_then_rerun_matches_uninterrupted(
    base: Path, tmp_path: Path, reference: dict
) -> None:
    (tmp_path / "pairs.json").write_text(json.dumps(PAIRS))
    (tmp_path / "cfg.json").write_text(cfg().model_dump_json())
    args = [
        sys.executable,
        "-c",
        CHILD,
        str(base),
        str(tmp_path / "pairs.json"),
        str(tmp_path / "cfg.json"),
        str(tmp_path),
    ]
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "w" / "train_log.jsonl"
    deadline = time.time() + 45
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "w" / "resume" / "state.json").read_text())["step"] in (4, 6)
    rerun = train_sft(
        str(base), PAIRS, tmp_path / "out", tmp_path / "w", cfg(), seed=7
    )  # the redelivered task
    assert rerun["complete"]
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["resumed_from"] in (4, 6)
    losses = log_losses(tmp_path / "w")
    assert [s for s, _ in losses] == list(range(1, 9))
    assert_same([x for _, x in losses], state(tmp_path / "out"), reference["full"])


@pytest.mark.parametrize("damage", ["garbage_weights", "missing_optim", "bad_json", "other_settings"])
def test_corrupt_state_restarts_cleanly(
    base: Path, tmp_path: Path, reference: dict, damage: str, caplog
) -> None:
    train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "w", cfg(), seed=7, stop_after=2)
    resume = tmp_path / "w" / "resume"
    seed = 7
    if damage == "garbage_weights":
        (resume / "trainable.safetensors").write_bytes(b"\x00garbage" * 10)
    elif damage == "missing_optim":
        (resume / "optim.pt").unlink()
    elif damage == "bad_json":
        (resume / "state.json").write_text("{not json")
    else:
        train_sft(str(base), PAIRS, tmp_path / "o2", tmp_path / "w", cfg(), seed=8, stop_after=1)
        seed = 7  # the state now belongs to seed 8: resuming seed 7 from it would be wrong
    s = train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "w", cfg(), seed=seed)
    assert s["complete"] and s["resumed_from"] == 0
    assert "restarting from step 0" in caplog.text
    assert (tmp_path / "w" / "resume.corrupt").exists()
    assert_same(s["losses"], state(tmp_path / "out"), reference["full"])
