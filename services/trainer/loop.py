"""The SFT optimisation loop: gradient accumulation, schedule, clipping, resumable checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from services.trainer.data import IGNORE, Example, collate, micro_batches
from shared.config import TrainingConfig

STATE_DIR = "resume"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, empty data, bad settings)."""


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
    """(gradient accumulation steps, total optimizer steps) for a data size and config."""
    per_pass = cfg.micro_batch_size * world_size
    accum = max(1, cfg.global_batch_size // per_pass)
    if cfg.max_steps:
        return accum, cfg.max_steps
    steps_per_epoch = max(1, math.ceil(n_examples / (per_pass * accum)))
    return accum, max(1, math.ceil(cfg.epochs * steps_per_epoch))


def batch_stream(examples: list[Example], cfg: TrainingConfig, seed: int, start_micro: int = 0) -> Iterator[list[int]]:
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


def _save_state(workdir: Path, model, optimizer, scheduler, step: int, save_model: Callable[[Path], None]) -> None:
    tmp = workdir / f"{STATE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    final = workdir / STATE_DIR
    old = workdir / f"{STATE_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def resume_step(workdir: Path) -> int:
    """The step of the last saved state under `workdir` (0 when none)."""
    state = workdir / STATE_DIR / "state.json"
    return json.loads(state.read_text())["step"] if state.exists() else 0


def run_loop(
    model,
    examples: list[Example],
    cfg: TrainingConfig,
    seed: int,
    workdir: Path,
    pad_id: int,
    device: torch.device,
    save_model: Callable[[Path], None],
    load_model_state: Callable[[Path], None],
    on_step: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train `model` on `examples`; resumes from `workdir/resume` when present.

    Returns a summary (steps, final loss, tokens/s, padding fraction, peak memory).
    `stop_after` ends the run early after that many steps (used to test resumption).
    """
    if not examples:
        raise TrainingError("the CoT set has no trainable items")
    accum, total_steps = plan_steps(len(examples), cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    start = resume_step(workdir)
    if start:
        load_model_state(workdir / STATE_DIR / "model")
        st = torch.load(workdir / STATE_DIR / "optim.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
    torch.manual_seed(seed + start)
    random.seed(seed + start)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if _use_bf16(cfg, device) else contextlib.nullcontext()
    stream = batch_stream(examples, cfg, seed, start_micro=start * accum)
    log_path = workdir / "train_log.jsonl"
    model.train()
    t0, padded, real, last_loss, losses = time.perf_counter(), 0, 0, float("nan"), []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = start
    while step < total_steps:
        micro = [next(stream) for _ in range(accum)]
        n_label = sum(sum(1 for t in examples[i].labels if t != IGNORE) for mb in micro for i in mb)
        step_loss, step_real = 0.0, 0
        for mb in micro:
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in mb], pad_id).items()}
            padded += batch["attention_mask"].numel()
            step_real += int(batch["attention_mask"].sum())
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            shift_logits = logits[:, :-1].float()
            shift_labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
            ) / max(1, n_label)
            loss.backward()
            step_loss += float(loss.detach())
        if not math.isfinite(step_loss):
            raise TrainingError(f"non-finite loss ({step_loss}) at step {step + 1}; lower the learning rate")
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        real += step_real
        last_loss = step_loss
        losses.append(step_loss)
        elapsed = time.perf_counter() - t0
        record = {
            "step": step,
            "loss": round(step_loss, 5),
            "lr": scheduler.get_last_lr()[0],
            "tokens_per_s": round(real / elapsed, 1),
            "padding_fraction": round(1 - real / max(1, padded), 4),
            "peak_memory_bytes": _peak_memory(device),
        }
        if step % 10 == 0 or step == total_steps:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if on_step:
            on_step(record)
        if step % cfg.save_every_steps == 0 and step < total_steps:
            _save_state(workdir, model, optimizer, scheduler, step, save_model)
        if stop_after and step - start >= stop_after:
            _save_state(workdir, model, optimizer, scheduler, step, save_model)
            break
    elapsed = time.perf_counter() - t0
    return {
        "steps": step,
        "total_steps": total_steps,
        "resumed_from": start,
        "final_loss": last_loss,
        "first_loss": losses[0] if losses else None,
        "tokens_per_s": real / elapsed if elapsed else 0.0,
        "padding_fraction": 1 - real / max(1, padded),
        "peak_memory_bytes": _peak_memory(device),
        "wall_s": elapsed,
        "grad_accum": accum,
    }


def _use_bf16(cfg: TrainingConfig, device: torch.device) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
