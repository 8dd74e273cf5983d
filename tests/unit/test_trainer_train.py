"""Full fine-tuning on a tiny student: the loss falls, weights change, checkpoints reload, errors are clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from services.trainer.loop import TrainingError
from services.trainer.recipe import train_sft
from shared.config import TrainingConfig
from tests.unit.tiny_student import tiny_student

torch.set_num_threads(1)

PAIRS = [
    (f"What is {a} + {b}?", f"{a} + {b} = {a + b}. The answer is {a + b}")
    for a in range(1, 9)
    for b in range(1, 5)
]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny xs student whose tokenizer is trained on the PAIRS text."""
    return tiny_student(tmp_path_factory.mktemp("tiny"), PAIRS)


def cfg(**kw) -> TrainingConfig:
    """Small, fast settings."""
    return TrainingConfig(
        **({"lr": 3e-3, "max_steps": 8, "global_batch_size": 8, "micro_batch_size": 4} | kw)
    )


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_loss_falls_and_parameters_change(base: Path, tmp_path: Path) -> None:
    s = train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "work", cfg(), seed=100)
    assert s["complete"] and s["steps"] == 8
    assert s["losses"][-1] < s["losses"][0] - 0.3
    before, after = weights(base), weights(tmp_path / "out")
    changed = [k for k in before if not torch.allclose(before[k], after[k])]
    assert len(changed) == len(before)
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    assert {"loss", "tokens_per_s", "padding_fraction", "peak_memory_bytes"} <= set(log[0])
    from shared import metrics

    assert metrics.REGISTRY.get_sample_value("cotd_trainer_loss") == pytest.approx(log[-1]["loss"])
    assert metrics.REGISTRY.get_sample_value("cotd_trainer_tokens_per_second") > 0


def test_full_checkpoint_reloads_with_auto_classes(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.evaluator.evaluate import load_for_inference

    train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "work", cfg(max_steps=2), seed=1)
    assert (tmp_path / "out" / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = tok("Q: What is 2 + 3?\nA: ", return_tensors="pt")["input_ids"]
    m2, _ = load_for_inference(tmp_path / "out", torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, m2(ids).logits)


def test_fast_head_loss_equals_full_logits_loss(base: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.trainer.data import collate, encode_pair
    from services.trainer.loss import ResponseLoss

    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    batch = collate([encode_pair(tok, "auto", q, r, 4096) for q, r in PAIRS[:5]], tok.pad_token_id)
    fast, slow = ResponseLoss(model), ResponseLoss(model, fast=False)
    assert fast.fast
    torch.testing.assert_close(fast(batch, 40), slow(batch, 40))


def test_truncation_is_counted(base: Path, tmp_path: Path) -> None:
    s = train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "work", cfg(max_steps=1, cutoff=16), seed=1)
    assert s["truncated"] == len(PAIRS)


def test_empty_set_is_refused(base: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="empty"):
        train_sft(str(base), [], tmp_path / "out", tmp_path / "work", cfg(), seed=1)


def test_non_finite_loss_stops_with_a_clear_error(base: Path, tmp_path: Path, monkeypatch) -> None:
    from services.trainer import loss as loss_mod

    real = loss_mod.ResponseLoss.forward
    monkeypatch.setattr(loss_mod.ResponseLoss, "forward", lambda self, *a: real(self, *a) * float("nan"))
    with pytest.raises(TrainingError, match="non-finite loss"):
        train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "work", cfg(), seed=1)


def test_qlora_on_cpu_is_a_clear_error(base: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="QLoRA needs a CUDA GPU"):
        train_sft(
            str(base),
            PAIRS,
            tmp_path / "out",
            tmp_path / "work",
            cfg(method="qlora"),
            seed=1,
            device_setting="cpu",
        )


def test_parallel_on_cpu_degrades_to_one_device(base: Path, tmp_path: Path) -> None:
    s = train_sft(
        str(base),
        PAIRS,
        tmp_path / "out",
        tmp_path / "work",
        cfg(max_steps=1, parallel="fsdp"),
        seed=1,
        device_setting="cpu",
    )
    assert s["complete"] and s["parallel"] == "none" and s["world_size"] == 1


def test_cli_trains_from_a_store_key(base: Path, tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from services.trainer.cli import train
    from shared.artifacts import LocalStore

    store = LocalStore(tmp_path / "store")
    src = tmp_path / "cotset"
    src.mkdir()
    (src / "cot.jsonl").write_text(
        "".join(
            json.dumps({"id": str(i), "question": q, "rationale": r}) + "\n" for i, (q, r) in enumerate(PAIRS)
        )
    )
    store.publish("cotsets", "abc123", src, {})
    monkeypatch.setenv("COTD_STORE_DIR", str(tmp_path / "store"))
    from shared.settings import get_settings

    if hasattr(get_settings, "cache_clear"):
        get_settings.cache_clear()
    args = [
        "--student",
        str(base),
        "--cot",
        "abc123",
        "--out",
        str(tmp_path / "ck"),
        "--max-steps",
        "2",
        "--global-batch-size",
        "8",
        "--micro-batch-size",
        "4",
        "--lr",
        "1e-3",
    ]
    res = CliRunner().invoke(train, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index('{"steps"') :].splitlines()[0])["complete"]
    bad = CliRunner().invoke(train, ["--student", str(base), "--cot", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "neither a file nor a CoT set key" in bad.output


def test_fp16_scales_the_loss_and_resumes_with_the_scale(base: Path, tmp_path: Path) -> None:
    """precision fp16 runs under a GradScaler (its scale is logged and saved with the resume state)."""
    from services.trainer.checkpoint import OPTIM, STATE_DIR

    s = train_sft(
        str(base), PAIRS, tmp_path / "out", tmp_path / "w", cfg(precision="fp16", max_steps=4), seed=1,
        device_setting="cpu", stop_after=2,
    )  # fmt: skip
    assert not s["complete"]
    state = torch.load(tmp_path / "w" / STATE_DIR / OPTIM, weights_only=True)
    assert state["scaler"]["scale"] > 0
    s = train_sft(
        str(base), PAIRS, tmp_path / "out", tmp_path / "w", cfg(precision="fp16", max_steps=4), seed=1,
        device_setting="cpu",
    )  # fmt: skip
    assert s["complete"] and s["resumed_from"] == 2 and all(x == x for x in s["losses"])
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["loss_scale"] > 0 for r in log)
    assert all(r["parameters_trainable"] == r["parameters_total"] > 0 for r in log)
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["parameters_total"] == log[0]["parameters_total"]


def test_fp16_with_fsdp_is_refused_in_one_line() -> None:
    from services.trainer.loop import grad_scaler

    with pytest.raises(TrainingError, match="fp16 is not supported with parallel fsdp"):
        grad_scaler(cfg(precision="fp16"), torch.device("cpu"), "fsdp")
    assert not grad_scaler(cfg(), torch.device("cpu")).is_enabled()
