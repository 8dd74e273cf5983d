"""The SFT recipe: load a student, encode a CoT set, run the loop, save safetensors.

Components (templates, data, loop) live apart from this recipe, as in torchtune.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from services.trainer.data import encode_pair
from services.trainer.loop import TrainingError, run_loop
from shared.config import TrainingConfig
from shared.device import pick_device

log = logging.getLogger("cotd.trainer")


def load_student(model_id: str, revision: str | None, trust_remote_code: bool, cfg: TrainingConfig, seed: int, device):
    """The student model and tokenizer, from a local path or the hub (random init when from_scratch)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(seed)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    if cfg.from_scratch:
        config = AutoConfig.from_pretrained(model_id, **kwargs)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    else:
        dtype = torch.bfloat16 if device.type == "cuda" and cfg.precision in ("auto", "bf16") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype, attn_implementation="sdpa", **kwargs)
    if device.type == "cuda" and cfg.gradient_checkpointing in ("auto", "on") or cfg.gradient_checkpointing == "on":
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model.to(device), tok


def train_sft(
    model_id: str,
    pairs: list[tuple[str, str]],
    out_dir: Path,
    workdir: Path,
    cfg: TrainingConfig,
    seed: int,
    template: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    device_setting: str = "auto",
    stop_after: int | None = None,
) -> dict:
    """Fine-tune `model_id` on (question, rationale) pairs; write the checkpoint to `out_dir`.

    Resumable: state is saved under `workdir` every `cfg.save_every_steps` steps.
    """
    if not pairs:
        raise TrainingError("the CoT set is empty: nothing to train on")
    if cfg.method != "full":
        raise TrainingError(f"method {cfg.method!r} is not available in this build")
    device = pick_device(device_setting)
    model, tok = load_student(model_id, revision, trust_remote_code, cfg, seed, device)
    examples = [encode_pair(tok, template, q, r, cfg.cutoff) for q, r in pairs]
    n_trunc = sum(e.truncated for e in examples)
    if n_trunc:
        log.warning("truncated %d of %d examples to the cutoff of %d tokens", n_trunc, len(examples), cfg.cutoff)
    workdir.mkdir(parents=True, exist_ok=True)

    def save_model(path: Path) -> None:
        model.save_pretrained(path, safe_serialization=True)

    def load_model_state(path: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(path / "model.safetensors"), device=str(device))
        model.load_state_dict(state, strict=False)

    summary = run_loop(
        model, examples, cfg, seed, workdir, tok.pad_token_id, device, save_model, load_model_state, stop_after=stop_after
    )
    summary |= {"examples": len(examples), "truncated": n_trunc}
    if summary["steps"] < summary["total_steps"]:
        return summary | {"complete": False}
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    shutil.copy(workdir / "train_log.jsonl", out_dir / "train_log.jsonl") if (workdir / "train_log.jsonl").exists() else None
    return summary | {"complete": True}
