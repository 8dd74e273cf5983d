"""Trainer throughput against TRL's SFTTrainer, side by side in one process.

The same tiny student (tokenizer built by `init_tiny` on the CoT file), the same CoT set from
`../shared/data/paper-cot/`, the same hyperparameters (lr, batch by accumulation, cosine, steps,
cutoff, seed), the loss on completion tokens only in both. TRL keeps its defaults otherwise
(random batches padded to the longest, no padding-free packing), except gradient checkpointing,
which is set like ours (off on CPU, on on GPU) so that it does not decide the ratio.
Rounds alternate cotd / TRL so machine noise hits both; tokens/s counts real (non-pad) tokens.

    python bench/train.py [--cot FILE] [--size s] [--steps 6] [--rounds 3]

Ends with `BENCH train key=value ...` and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COT = ROOT.parent / "shared" / "data" / "paper-cot" / "SVAMP_ChatGPT_level3_ranked.json"


def run_cotd(base: Path, pairs: list[tuple[str, str]], args, work: Path) -> dict:
    """One run of our trainer; tokens/s and padding fraction from its summary."""
    from services.trainer.recipe import train_sft
    from shared.config import TrainingConfig

    cfg = TrainingConfig(
        lr=args.lr,
        max_steps=args.steps,
        global_batch_size=args.global_batch,
        micro_batch_size=args.micro_batch,
        cutoff=args.cutoff,
        save_every_steps=10_000,
    )
    s = train_sft(str(base), pairs, work / "out", work / "state", cfg, seed=100, template="auto")
    return {
        "tokens_per_s": s["tokens_per_s"],
        "padding_fraction": s["padding_fraction"],
        "final_loss": s["final_loss"],
    }


def run_trl(base: Path, pairs: list[tuple[str, str]], args, work: Path) -> dict:
    """One run of TRL's SFTTrainer on prompt/completion data (completion-only loss)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from services.trainer.templates import render_prompt

    tok = AutoTokenizer.from_pretrained(base)
    data = Dataset.from_list(
        [{"prompt": render_prompt("auto", tok, q), "completion": r.strip()} for q, r in pairs]
    )
    cuda = torch.cuda.is_available()
    config = SFTConfig(
        output_dir=str(work / "trl"),
        learning_rate=args.lr,
        max_steps=args.steps,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.global_batch // args.micro_batch,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        max_length=args.cutoff,
        seed=100,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=cuda,
        completion_only_loss=True,
        disable_tqdm=True,
    )
    torch.manual_seed(100)
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="sdpa")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
    counts = {"real": 0, "padded": 0}
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        counts["real"] += (
            int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        )
        counts["padded"] += batch["input_ids"].numel()
        return batch

    trainer.data_collator = counting
    trainer.train_dataloader = None
    timing: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            timing["t0"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            timing["t1"] = time.perf_counter()

    trainer.add_callback(Clock())
    out = trainer.train()
    wall = timing["t1"] - timing["t0"]
    return {
        "tokens_per_s": counts["real"] / wall,
        "padding_fraction": 1 - counts["real"] / max(1, counts["padded"]),
        "final_loss": out.training_loss,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cot", type=Path, default=DEFAULT_COT)
    p.add_argument("--size", default="s")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--cutoff", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    from services.trainer.tiny import init_tiny
    from shared.cotset import read_training_pairs

    pairs = read_training_pairs(args.cot)
    results: dict[str, list[dict]] = {"cotd": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = init_tiny(Path(tmp) / "base", corpus=[str(args.cot)], size=args.size)
        for r in range(args.rounds):
            order = (
                [("cotd", run_cotd), ("trl", run_trl)]
                if r % 2 == 0
                else [("trl", run_trl), ("cotd", run_cotd)]
            )
            for name, fn in order:
                res = fn(base, pairs, args, Path(tmp) / f"{name}{r}")
                results[name].append(res)
                print(
                    f"round {r} {name}: {res['tokens_per_s']:.0f} tok/s, padding {res['padding_fraction']:.3f}",
                    flush=True,
                )
    ratios = [
        c["tokens_per_s"] / t["tokens_per_s"] for c, t in zip(results["cotd"], results["trl"], strict=True)
    ]
    summary = {
        "cot_file": args.cot.name,
        "student": f"tiny-{args.size}",
        "steps": args.steps,
        "rounds": args.rounds,
        "global_batch": args.global_batch,
        "micro_batch": args.micro_batch,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cotd_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in results["cotd"]), 1),
        "trl_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in results["trl"]), 1),
        "tokens_per_s_ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "cotd_padding_fraction": round(statistics.mean(r["padding_fraction"] for r in results["cotd"]), 4),
        "trl_padding_fraction": round(statistics.mean(r["padding_fraction"] for r in results["trl"]), 4),
        "cotd_final_loss": round(results["cotd"][-1]["final_loss"], 4),
        "trl_mean_loss": round(results["trl"][-1]["final_loss"], 4),
    }
    out = ROOT / "bench" / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary | {"runs": results, "ratios": ratios}, indent=2))
    print("BENCH train " + " ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
