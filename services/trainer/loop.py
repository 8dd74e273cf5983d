"""The SFT optimisation loop: gradient accumulation, schedule, clipping, resumable state.

The data order is a pure function of (seed, epoch, lengths, batch settings), so a run resumed
from step k sees exactly the micro-batches an uninterrupted run would, and the RNG state saved
with the step makes dropout replay identically (single process).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from services.trainer import checkpoint as ckpt
from services.trainer.data import IGNORE, Example, collate, micro_batches
from services.trainer.errors import TrainingError
from services.trainer.packing import collate_flat
from services.trainer.parallel import Parallel
from services.trainer.telemetry import LOG_FILE, StepLog, peak_memory, trim_log
from shared.config import TrainingConfig

STATE_DIR = ckpt.STATE_DIR
resume_step = ckpt.resume_step


def lr_lambda(cfg: TrainingConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak LR at each step: linear warmup, then cosine/linear/constant."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        if cfg.scheduler == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        if cfg.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def plan_steps(n_examples: int, cfg: TrainingConfig, world_size: int = 1) -> tuple[int, int]:
    """(gradient accumulation steps per process, total optimizer steps) for a data size and config."""
    per_pass = cfg.micro_batch_size * world_size
    accum = max(1, cfg.global_batch_size // per_pass)
    if cfg.max_steps:
        return accum, cfg.max_steps
    steps_per_epoch = max(1, math.ceil(n_examples / (per_pass * accum)))
    return accum, max(1, math.ceil(cfg.epochs * steps_per_epoch))


def batch_stream(
    examples: list[Example], cfg: TrainingConfig, seed: int, start_micro: int = 0
) -> Iterator[list[int]]:
    """An endless stream of micro-batches over epochs, starting at micro-batch `start_micro`."""
    lengths = [len(e.input_ids) for e in examples]
    epoch, skipped = 0, 0
    while True:
        batches = micro_batches(lengths, cfg.micro_batch_size, seed, epoch, cfg.group_by_length)
        if skipped + len(batches) <= start_micro:
            skipped += len(batches)
        else:
            yield from batches[max(0, start_micro - skipped) :]
            skipped = start_micro
        epoch += 1


def order_settings(cfg: TrainingConfig, seed: int, world: int) -> dict:
    """The settings a resumed run must share with the run that saved the state."""
    keys = (
        "method",
        "lr",
        "epochs",
        "max_steps",
        "scheduler",
        "warmup_steps",
        "global_batch_size",
        "micro_batch_size",
        "cutoff",
        "weight_decay",
        "group_by_length",
        "lora_r",
        "lora_alpha",
    )
    return {k: getattr(cfg, k) for k in keys} | {"seed": seed, "world": world}


def use_bf16(cfg: TrainingConfig, device: torch.device) -> bool:
    """bf16 autocast: `bf16`, or `auto` on CUDA."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def _autocast(cfg: TrainingConfig, device: torch.device):
    if use_bf16(cfg, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if cfg.precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(cfg: TrainingConfig, device: torch.device, mode: str = "none") -> torch.amp.GradScaler:
    """Loss scaling for fp16 (a disabled scaler, which passes through, for every other precision)."""
    if cfg.precision == "fp16" and mode == "fsdp":
        raise TrainingError("precision fp16 is not supported with parallel fsdp; use bf16")
    return torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")


def _restore(par: Parallel, workdir: Path, fingerprint: str, optimizer, scheduler, scaler, seed: int) -> int:
    """Load the saved state when there is a usable one; the step to continue from."""
    state = ckpt.load_state(workdir, fingerprint, par.expected_shapes()) if par.info.main else None
    start = par.broadcast(state.step if state else 0)
    if start and not par.info.main:
        state = ckpt.load_state(workdir, fingerprint, par.expected_shapes())
    if not state:
        torch.manual_seed(seed + par.info.rank)
        random.seed(seed + par.info.rank)
        return 0
    try:
        par.load_optim(optimizer, state.optim["optimizer"])
        scheduler.load_state_dict(state.optim["scheduler"])
        if scaler.is_enabled() and state.optim.get("scaler"):
            scaler.load_state_dict(state.optim["scaler"])
        par.load_trainable(state.weights)
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainingError(
            f"the saved state in {workdir / STATE_DIR} does not fit this model ({e}); delete it to start over"
        ) from None
    if par.info.main:
        ckpt.set_rng_state(state.optim["rng"])
    else:
        torch.manual_seed(seed + par.info.rank + 7919 * start)
    return start


def run_loop(
    par: Parallel,
    examples: list[Example],
    cfg: TrainingConfig,
    seed: int,
    workdir: Path,
    pad_id: int,
    device: torch.device,
    on_step: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
    log_fields: dict | None = None,
    padding_free: bool = False,
) -> dict:
    """Train on `examples`; resumes from `workdir/resume` when a usable state is there.

    Returns a summary (steps, losses, tokens/s, padding fraction, peak memory).
    `stop_after` ends the run early after that many steps (used to test resumption).
    `log_fields` (e.g. parameter counts) are added to every record of the train log.
    fp16 scales the loss (`torch.amp.GradScaler`); a step whose gradients overflow is skipped.
    `padding_free` flattens each micro-batch into one row (the model must run `VARLEN_ATTENTION`).
    """
    if not examples:
        raise TrainingError("the CoT set has no trainable items")
    world, rank = par.world, par.info.rank
    accum, total_steps = plan_steps(len(examples), cfg, world)
    params = [p for p in par.module.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    lengths = [len(e.input_ids) for e in examples]
    n_labels = [sum(1 for t in e.labels if t != IGNORE) for e in examples]
    fingerprint = ckpt.run_fingerprint(lengths, order_settings(cfg, seed, world))
    scaler = grad_scaler(cfg, device, par.mode)
    start = _restore(par, workdir, fingerprint, optimizer, scheduler, scaler, seed)
    log_path = workdir / LOG_FILE
    if par.info.main:
        trim_log(log_path, start)
    steplog = StepLog(log_path if par.info.main else None)
    stream = batch_stream(examples, cfg, seed, start_micro=start * accum * world)
    autocast = _autocast(cfg, device)
    par.module.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    real_total = padded_total = 0
    losses: list[float] = []
    step = start

    def save(at: int) -> None:
        weights, optim = par.trainable_state(), par.optim_state(optimizer)
        if par.info.main:
            state = {"optimizer": optim, "scheduler": scheduler.state_dict(), "rng": ckpt.rng_state()}
            if scaler.is_enabled():
                state["scaler"] = scaler.state_dict()
            ckpt.save_state(workdir, at, fingerprint, weights, state)
        par.barrier()

    while step < total_steps:
        t_step = time.perf_counter()
        micro = [next(stream) for _ in range(accum * world)]
        n_label = sum(n_labels[i] for mb in micro for i in mb)
        step_real = sum(lengths[i] for mb in micro for i in mb)
        step_padded = (
            step_real if padding_free else sum(len(mb) * max(lengths[i] for i in mb) for mb in micro)
        )
        mine = micro[rank::world]
        step_loss = 0.0
        for j, mb in enumerate(mine):
            chosen = [examples[i] for i in mb]
            batch = collate_flat(chosen) if padding_free else collate(chosen, pad_id)
            # the example boundaries stay on the host: per-example attention slices by them in every layer
            batch = {
                k: v if k == "cu_seq_lens" else v.to(device, non_blocking=True) for k, v in batch.items()
            }
            with par.sync(last=j == len(mine) - 1), autocast:
                loss = par.module(batch, n_label)
                scaler.scale(loss * world).backward()
            step_loss += float(loss.detach())
        step_loss = par.sum(step_loss)
        if not math.isfinite(step_loss):
            raise TrainingError(
                f"non-finite loss ({step_loss}) at step {step + 1}; lower the learning rate or check the data"
            )
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        scaler.step(optimizer)  # skipped when fp16 gradients overflowed
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        real_total += step_real
        padded_total += step_padded
        losses.append(step_loss)
        now = time.perf_counter()
        record = {
            "step": step,
            "loss": round(step_loss, 6),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": round(float(grad_norm), 5),
            "tokens": step_real,
            "tokens_per_s": round(step_real / max(1e-9, now - t_step), 1),
            "avg_tokens_per_s": round(real_total / max(1e-9, now - t0), 1),
            "padding_fraction": round(1 - step_real / max(1, step_padded), 4),
            "peak_memory_bytes": peak_memory(device),
            **(log_fields or {}),
        }
        if scaler.is_enabled():
            record["loss_scale"] = scaler.get_scale()
        steplog.write(record, step_real)
        if on_step:
            on_step(record)
        if step < total_steps and (
            step % cfg.save_every_steps == 0 or (stop_after and step - start >= stop_after)
        ):
            save(step)
        if stop_after and step - start >= stop_after:
            break
    elapsed = time.perf_counter() - t0
    return {
        "steps": step,
        "total_steps": total_steps,
        "resumed_from": start,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "losses": [round(x, 6) for x in losses],
        "tokens_per_s": real_total / elapsed if elapsed else 0.0,
        "padding_fraction": 1 - real_total / max(1, padded_total),
        "peak_memory_bytes": peak_memory(device),
        "wall_s": elapsed,
        "grad_accum": accum,
        "world_size": world,
        "padding_free": padding_free,
    }
