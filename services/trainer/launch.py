"""Entry point of one training process under torchrun: `python -m services.trainer.launch SPEC.json`.

`parallel.spawn` writes the spec; rank 0 writes `launch_summary.json` beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(spec_path: str) -> None:
    """Run the recipe with the spec's arguments in this rank."""
    from services.trainer.parallel import dist_from_env
    from services.trainer.recipe import train_sft
    from shared.config import TrainingConfig

    spec = json.loads(Path(spec_path).read_text())
    summary = train_sft(
        spec["model_id"],
        [tuple(p) for p in spec["pairs"]],
        Path(spec["out_dir"]),
        Path(spec["workdir"]),
        TrainingConfig(**spec["cfg"]),
        spec["seed"],
        template=spec["template"],
        revision=spec["revision"],
        trust_remote_code=spec["trust_remote_code"],
        device_setting=spec["device_setting"],
        stop_after=spec["stop_after"],
        base_ref=spec.get("base_ref"),
    )
    if dist_from_env().main:
        (Path(spec_path).parent / "launch_summary.json").write_text(json.dumps(summary))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
