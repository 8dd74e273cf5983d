"""Data parallelism for the trainer: single device, DDP or FSDP (FSDP2 `fully_shard`).

`parallel: ddp|fsdp` in the grid asks for every GPU the worker sees. A worker that is not
already under `torchrun` re-launches the recipe with `torch.distributed.run` over
`torch.cuda.device_count()` processes; under `torchrun`/`accelerate launch` the recipe uses the
process group it is given. With one device (CPU, or one GPU) the setting degrades to a plain
single-device run with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.trainer.errors import TrainingError

log = logging.getLogger("cotd.trainer")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes logs, states and the checkpoint."""
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Rank and world size as torchrun / accelerate set them."""
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def plan_mode(parallel: str, device: torch.device, info: DistInfo) -> str:
    """'none', 'ddp', 'fsdp', or 'spawn' (relaunch over all visible GPUs with torchrun)."""
    if info.world > 1:
        return "ddp" if parallel == "none" else parallel
    if parallel == "none":
        return "none"
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        return "spawn"
    log.warning(
        "parallel=%s needs several GPUs; this worker sees one %s device, so it trains on one",
        parallel,
        device.type,
    )
    return "none"


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the torchrun process group (NCCL on GPU, gloo on CPU)."""
    import torch.distributed as dist

    if info.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def _decoder_layers(lm: nn.Module) -> list[nn.Module]:
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base
    layers = getattr(decoder, "layers", None) or getattr(decoder, "h", None)
    return list(layers) if layers is not None else []


class Parallel:
    """Wraps the loss module for the chosen mode and gathers/scatters full state for saving."""

    def __init__(
        self, module: nn.Module, lm: nn.Module, mode: str, info: DistInfo, device: torch.device, bf16: bool
    ):
        self.lm, self.mode, self.info, self.device = lm, mode, info, device
        if mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.module = DistributedDataParallel(module, device_ids=ids)
        elif mode == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = (
                MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
            )
            kw = {"mp_policy": mp} if mp else {}
            for layer in _decoder_layers(lm):
                fully_shard(layer, **kw)
            self.module = fully_shard(module, **kw)
        else:
            self.module = module
        self.names = [n for n, p in lm.named_parameters() if p.requires_grad]

    @property
    def world(self) -> int:
        """Processes in the group."""
        return self.info.world

    def sync(self, last: bool):
        """A context that skips the gradient all-reduce on all but the last micro-batch of a step."""
        if self.mode == "ddp" and not last:
            return self.module.no_sync()
        if self.mode == "fsdp":
            self.module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def expected_shapes(self) -> dict[str, torch.Size]:
        """Full (unsharded) shapes of the trainable tensors."""
        params = dict(self.lm.named_parameters())  # a DTensor's shape is the full one
        return {n: params[n].shape for n in self.names}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Full trainable tensors (every rank calls this; FSDP gathers)."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            sd = get_model_state_dict(
                self.lm, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
            return {n: sd[n] for n in self.names if n in sd}
        params = dict(self.lm.named_parameters())
        return {n: params[n].detach() for n in self.names}

    def load_trainable(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy saved trainable tensors into the model."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(
                self.lm, weights, options=StateDictOptions(full_state_dict=True, strict=False)
            )
            return
        params = dict(self.lm.named_parameters())
        with torch.no_grad():
            for n in self.names:
                params[n].copy_(weights[n].to(params[n].device, params[n].dtype))

    def optim_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer state, full (gathered) under FSDP."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(self.lm, optimizer, options=opts)
        return optimizer.state_dict()

    def load_optim(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Restore the optimizer state."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(
                self.lm, optimizer, state, options=StateDictOptions(full_state_dict=True)
            )
            return
        optimizer.load_state_dict(state)

    def full_model_state(self) -> dict[str, torch.Tensor] | None:
        """Every weight, gathered to CPU (FSDP only; None otherwise: save the model itself)."""
        if self.mode != "fsdp":
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.lm, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def sum(self, value: float) -> float:
        """Sum of a float over ranks."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of `obj` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def spawn(spec: dict[str, Any], workdir: Path, nproc: int) -> dict[str, Any]:
    """Run the recipe under torchrun over `nproc` local GPUs; rank 0's summary."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / "launch.json"
    spec_path.write_text(json.dumps(spec))
    summary_path = workdir / "launch_summary.json"
    summary_path.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "services.trainer.launch",
        str(spec_path),
    ]
    log.info("launching %d training processes: %s", nproc, " ".join(cmd))
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0 or not summary_path.exists():
        raise TrainingError(
            f"distributed training over {nproc} GPUs failed (exit {rc}); see the ranks' log above"
        )
    return json.loads(summary_path.read_text())
