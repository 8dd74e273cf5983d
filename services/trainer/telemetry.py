"""The training log (`train_log.jsonl`, one record per optimizer step) and the Prometheus gauges."""

from __future__ import annotations

import json
from pathlib import Path

import torch

LOG_FILE = "train_log.jsonl"


def peak_memory(device: torch.device) -> int:
    """Peak accelerator memory allocated (CUDA), else the process's peak resident memory."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def trim_log(path: Path, last_step: int) -> None:
    """Drop records after `last_step` (written by a run killed after its last saved state)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a torn line from a kill
    path.write_text("".join(k + "\n" for k in keep))


class StepLog:
    """Appends one JSON record per step and mirrors it into the trainer metrics."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, record: dict, step_tokens: int) -> None:
        """Record a step (only rank 0 has a path)."""
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        from shared import metrics

        metrics.TRAINER_TOKENS_PER_SECOND.set(record["tokens_per_s"])
        metrics.TRAINER_TOKENS.inc(step_tokens)
        metrics.TRAINER_STEPS.inc()
        metrics.TRAINER_LOSS.set(record["loss"])
        metrics.TRAINER_PEAK_MEMORY.set(record["peak_memory_bytes"])
