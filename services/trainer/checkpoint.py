"""Resumable training state under `workdir/resume`: trainable weights, optimizer, scheduler, RNG, step.

The state is written to a temporary folder and renamed into place, so a kill leaves either the
previous state or the new one. On resume every file is read and checked before anything is
applied; a state that is missing, corrupt or from other settings is set aside and training
restarts cleanly from step 0 (it never fails deep inside torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("cotd.trainer")

STATE_DIR = "resume"
WEIGHTS = "trainable.safetensors"
OPTIM = "optim.pt"
META = "state.json"


@dataclass
class ResumeState:
    """A checked resume state, loaded on CPU and ready to apply."""

    step: int
    weights: dict[str, torch.Tensor]
    optim: dict[str, Any]


def run_fingerprint(lengths: list[int], settings: dict[str, Any]) -> str:
    """A hash of everything that fixes the data order and the optimizer (a resume must match it)."""
    blob = json.dumps({"lengths": lengths, "settings": settings}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    """The torch, CUDA and Python RNG states (dropout and any sampling depend on them)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    workdir: Path, step: int, fingerprint: str, weights: dict[str, torch.Tensor], optim: dict[str, Any]
) -> None:
    """Write the state for `step` atomically (tmp folder, then rename)."""
    from safetensors.torch import save_file

    tmp = workdir / f"{STATE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS))
    torch.save(optim, tmp / OPTIM)
    (tmp / META).write_text(json.dumps({"step": step, "fingerprint": fingerprint, "keys": sorted(weights)}))
    final, old = workdir / STATE_DIR, workdir / f"{STATE_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def resume_step(workdir: Path) -> int:
    """The step recorded in the state under `workdir` (0 when none or unreadable)."""
    try:
        return int(json.loads((workdir / STATE_DIR / META).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def load_state(workdir: Path, fingerprint: str, expected: dict[str, torch.Size]) -> ResumeState | None:
    """The saved state, checked against this run; None (after setting a bad state aside) to start over."""
    from safetensors.torch import load_file

    folder = workdir / STATE_DIR
    if not folder.exists():
        old = workdir / f"{STATE_DIR}.old"  # a kill between the two renames of save_state
        if not old.exists():
            return None
        old.rename(folder)
    try:
        meta = json.loads((folder / META).read_text())
        step = int(meta["step"])
        if meta.get("fingerprint") != fingerprint:
            raise ValueError("it was saved by a run with other data or settings")
        weights = load_file(str(folder / WEIGHTS))
        missing = sorted(set(expected) - set(weights))
        if missing:
            raise ValueError(f"{len(missing)} trainable tensors are missing (e.g. {missing[0]})")
        for name, shape in expected.items():
            if weights[name].shape != shape:
                raise ValueError(f"{name} has shape {tuple(weights[name].shape)}, expected {tuple(shape)}")
        optim = torch.load(folder / OPTIM, map_location="cpu", weights_only=True)  # tensors and plain values only
        if not {"optimizer", "scheduler", "rng"} <= set(optim):
            raise ValueError("the optimizer file is incomplete")
    except Exception as e:  # noqa: BLE001 - any unreadable state means: start over, cleanly
        bad = workdir / f"{STATE_DIR}.corrupt"
        shutil.rmtree(bad, ignore_errors=True)
        folder.rename(bad)
        log.warning(
            "resume state in %s is unusable (%s: %s); set aside as %s, restarting from step 0",
            folder,
            type(e).__name__,
            str(e)[:200],
            bad.name,
        )
        return None
    return ResumeState(step=step, weights=weights, optim=optim)
