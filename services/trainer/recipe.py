"""The SFT recipe: load a student, encode a CoT set, run the loop, save safetensors.

Components (templates, data, loss, loop, checkpoint, parallel, models) live apart from this
recipe, as in torchtune.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from services.trainer.data import encode_pair
from services.trainer.loop import TrainingError, grad_scaler, run_loop, use_bf16
from services.trainer.loss import ResponseLoss
from services.trainer.memory import fix_mmap_threshold
from services.trainer.models import (
    CheckpointInfo,
    base_reference,
    checkpoint_info,
    load_student,
    parameter_counts,
    save_checkpoint,
)
from services.trainer.packing import flattened_attention, plan_padding_free
from services.trainer.parallel import Parallel, dist_from_env, init_process_group, plan_mode, spawn
from services.trainer.telemetry import LOG_FILE
from services.trainer.templates import TemplateError, resolve_template
from shared.config import TrainingConfig
from shared.device import pick_device

log = logging.getLogger("cotd.trainer")


def _device(setting: str, local_rank: int, world: int) -> torch.device:
    device = pick_device(setting)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


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
    on_step: Callable[[dict], None] | None = None,
    base_ref: str | None = None,
) -> dict:
    """Fine-tune `model_id` on (question, rationale) pairs; write the checkpoint to `out_dir`.

    Resumable: state is saved under `workdir` every `cfg.save_every_steps` steps, and a rerun
    with the same arguments continues from it. Returns a summary with `complete`.
    `on_step(record)` is called after every step in this process (not in spawned ranks); an
    exception it raises stops the run (a cancelled grid).
    `base_ref` is how the checkpoint names its base (default `model_id` as given): the artifact
    reference of a tiny or converted student, never the trainer's cache path.
    """
    out_dir, workdir = Path(out_dir), Path(workdir)
    if not pairs:
        raise TrainingError("the CoT set is empty: nothing to train on")
    info = dist_from_env()
    device = _device(device_setting, info.local_rank, info.world)
    mode = plan_mode(cfg.parallel, device, info)
    if mode == "spawn":
        spec = {
            "model_id": model_id,
            "pairs": pairs,
            "out_dir": str(out_dir),
            "workdir": str(workdir),
            "cfg": cfg.model_dump(),
            "seed": seed,
            "template": template,
            "revision": revision,
            "trust_remote_code": trust_remote_code,
            "device_setting": device_setting,
            "stop_after": stop_after,
            "base_ref": base_ref,
        }
        return spawn(spec, workdir, torch.cuda.device_count())
    init_process_group(info, device)
    if device.type == "cpu" and cfg.method != "full":
        fix_mmap_threshold()  # adapters: peak RSS follows the live tensors (see services.trainer.memory)
    grad_scaler(cfg, device, mode)  # refuses fp16 where it cannot scale, before loading anything
    model, tok = load_student(model_id, revision, trust_remote_code, cfg, seed, device, base_ref)
    try:
        resolve_template(template, tok)
    except TemplateError as e:
        raise TrainingError(str(e)) from None
    counts = parameter_counts(model)
    if info.main:
        log.info(
            "%s: %d parameters, %d trainable (%s)",
            model_id,
            counts["parameters_total"],
            counts["parameters_trainable"],
            cfg.method,
        )
    examples = [encode_pair(tok, template, q, r, cfg.cutoff) for q, r in pairs]
    n_trunc = sum(e.truncated for e in examples)
    if n_trunc and info.main:
        log.warning(
            "truncated %d of %d examples to the cutoff of %d tokens", n_trunc, len(examples), cfg.cutoff
        )
    workdir.mkdir(parents=True, exist_ok=True)
    padding_free = plan_padding_free(cfg.padding_free, model, cfg.cutoff)
    par = Parallel(ResponseLoss(model), model, mode, info, device, use_bf16(cfg, device))
    with flattened_attention(model, padding_free):
        summary = run_loop(
            par, examples, cfg, seed, workdir, tok.pad_token_id, device, on_step=on_step, stop_after=stop_after,
            log_fields=counts, padding_free=padding_free,
        )  # fmt: skip
    summary |= {
        "examples": len(examples),
        "truncated": n_trunc,
        "method": cfg.method,
        "parallel": mode,
        "template": resolve_template(template, tok),
        **counts,
    }
    if summary["steps"] < summary["total_steps"]:
        return summary | {"complete": False}
    full_state = par.full_model_state()  # collective under FSDP: every rank takes part
    if info.main:
        local = Path(model_id).expanduser()
        ckpt_info = checkpoint_info(
            model,
            tok,
            cfg,
            template,
            base_reference(model_id, base_ref),
            str(local.resolve()) if local.is_dir() else None,
            counts,
        )
        _save(model, tok, out_dir, cfg, device, full_state, ckpt_info)
        (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        if (workdir / LOG_FILE).exists():
            shutil.copy(workdir / LOG_FILE, out_dir / LOG_FILE)
    par.barrier()
    return summary | {"complete": True}


def _save(
    model,
    tok,
    out_dir: Path,
    cfg: TrainingConfig,
    device: torch.device,
    state: dict | None,
    info: CheckpointInfo,
) -> None:
    """Save full weights in bf16 when trained in bf16 (fp32 master weights are not needed any more)."""
    if cfg.method == "full" and use_bf16(cfg, device) and not cfg.from_scratch:
        if state is not None:
            state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
        else:
            model = model.to(torch.bfloat16)
    save_checkpoint(model, tok, out_dir, cfg, state_dict=state, info=info)
