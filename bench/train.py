"""Trainer throughput and memory against TRL's SFTTrainer, each run in its own process.

Two students: SmolLM2-135M-Instruct (the real model of `tests.realmodel`) and the tiny student
(`init_tiny` on the CoT file). Both sides get the same data, hyperparameters (lr, batch by
accumulation, cosine, steps, cutoff, seed), fp32 weights and SDPA attention, and the loss on
completion tokens only. TRL runs twice:

- `trl_default`: its SFTConfig defaults, except what would make the comparison unequal on CPU
  (bf16 autocast and gradient checkpointing are its defaults: both off here, as in ours);
- `trl_best`: then the settings TRL documents for speed in this case: completion-only loss,
  `train_sampling_strategy="group_by_length"` (transformers' LengthGroupedSampler), and, with
  `--padding-free`, `padding_free=True`. TRL asks for FlashAttention for padding-free; on CPU only
  SDPA/eager exist, and transformers >= 5 masks the flattened batch block-diagonally for SDPA (so
  it is correct, with attention over the whole flattened length; `max_length` is then None, as TRL
  requires without packing: no example here reaches the cutoff); packing (BFD) implies the same
  padding-free path, so it is not run separately.

Ours runs as shipped (`cotd_full`, `cotd_lora`: padding-free micro-batches with per-example SDPA,
`services/trainer/packing.py`; the mmap threshold pinned for LoRA only) and, to show what
padding-free adds, with padded length-grouped micro-batches (`cotd_padded`).

Every run is a fresh subprocess, so peak memory is that run's `ru_maxrss`. The memory fixes of
issue #15 are measured against the trainer without them (`lora_before`/`full_before`: peft's own
dropout, glibc's dynamic mmap threshold, padded micro-batches).

    python bench/train.py [--cot FILE] [--steps 2] [--smol-items 8] [--tiny-steps 6] [--padding-free]

`--padding-free` adds a third TRL run (`trl_padding_free`: grouped and padding-free); TRL's best
is then the faster of the two.

Ends with `BENCH train key=value ...` and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_COT = ROOT.parent / "shared" / "data" / "paper-cot" / "SVAMP_ChatGPT_level3_ranked.json"


def _quiet() -> None:
    import logging

    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()


def run_cotd(spec: dict, base: str, pairs: list[tuple[str, str]], work: Path) -> dict:
    """One run of our trainer; the per-step losses, tokens/s and padding from its summary."""
    from services.trainer.recipe import train_sft
    from shared.config import TrainingConfig

    if spec.get("before"):  # the trainer before issue #15: peft's dropout, dynamic mmap threshold, padding
        import services.trainer.models as models
        import services.trainer.recipe as recipe

        models.fuse_lora_dropout = lambda model: 0
        recipe.fix_mmap_threshold = lambda *a: False
    cfg = TrainingConfig(
        method=spec["method"],
        lr=spec["lr"],
        max_steps=spec["steps"],
        global_batch_size=spec["global_batch"],
        micro_batch_size=spec["micro_batch"],
        cutoff=spec["cutoff"],
        save_every_steps=10_000,
        precision="fp32",
        gradient_checkpointing="off",
        padding_free="off" if spec.get("before") or spec.get("padded") else "auto",
    )
    s = train_sft(base, pairs, work / "out", work / "state", cfg, seed=spec["seed"], template="auto")
    return {
        "tokens_per_s": s["tokens_per_s"],
        "padding_fraction": s["padding_fraction"],
        "losses": s["losses"],
    }


def run_trl(spec: dict, base: str, pairs: list[tuple[str, str]], work: Path) -> dict:
    """One run of TRL's SFTTrainer on prompt/completion data (full fine-tune)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from services.trainer.templates import end_token, render_prompt, resolve_template

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    end = end_token(resolve_template("auto", tok), tok)
    data = Dataset.from_list(
        [{"prompt": render_prompt("auto", tok, q), "completion": r.strip()} for q, r in pairs]
    )
    best = spec["variant"] in ("trl_best", "trl_padding_free")
    padding_free = spec["variant"] == "trl_padding_free"
    config = SFTConfig(
        output_dir=str(work / "trl"),
        learning_rate=spec["lr"],
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["micro_batch"],
        gradient_accumulation_steps=spec["global_batch"] // spec["micro_batch"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=None if padding_free else spec["cutoff"],  # TRL: not enforced padding-free
        seed=spec["seed"],
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        completion_only_loss=True,
        eos_token=end,
        disable_tqdm=True,
        **({"train_sampling_strategy": "group_by_length", "padding_free": padding_free} if best else {}),
    )
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="sdpa", dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
    counts = {"real": 0, "padded": 0}
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        counts["real"] += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        counts["padded"] += batch["input_ids"].numel()
        return batch

    trainer.data_collator = counting
    timing: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            timing["t0"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            timing["t1"] = time.perf_counter()

    trainer.add_callback(Clock())
    trainer.train()
    wall = timing["t1"] - timing["t0"]
    losses = [round(h["loss"], 6) for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens_per_s": counts["real"] / wall,
        "padding_fraction": 1 - counts["real"] / max(1, counts["padded"]),
        "losses": losses,
    }


def child(spec: dict) -> None:
    """Run one configuration in this (fresh) process and print `RESULT {json}`."""
    import torch

    torch.set_num_threads(spec["threads"])
    _quiet()
    from shared.cotset import read_training_pairs

    pairs = read_training_pairs(Path(spec["cot"]))[: spec["items"]]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fn = run_trl if spec["variant"].startswith("trl") else run_cotd
        res = fn(spec, spec["base"], pairs, Path(tmp))
    res["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    print("RESULT " + json.dumps(res), flush=True)


def spawn(spec: dict) -> dict:
    """One run in a subprocess (its own peak RSS)."""
    env = os.environ | {"OMP_NUM_THREADS": str(spec["threads"]), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"run {spec['variant']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def versions() -> dict:
    """The versions of every peer in the comparison."""
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "trl", "datasets")}


def run_case(name: str, base: str, common: dict, variants: list[dict]) -> dict:
    """All variants of one student, one subprocess each; printed as they finish."""
    runs: dict[str, dict] = {}
    for v in variants:
        res = spawn(common | v)
        runs[v["variant"]] = res
        print(
            f"{name} {v['variant']:12s} {res['tokens_per_s']:9.1f} tok/s  padding {res['padding_fraction']:.3f}  "
            f"peak {res['peak_rss_bytes'] / 2**30:5.2f} GiB  losses {res['losses']}",
            flush=True,
        )
    return runs


def _gib(runs: dict, key: str) -> float | None:
    return round(runs[key]["peak_rss_bytes"] / 2**30, 2) if key in runs else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--cot", type=Path, default=DEFAULT_COT)
    p.add_argument("--steps", type=int, default=2, help="SmolLM2 optimizer steps")
    p.add_argument("--smol-items", type=int, default=8)
    p.add_argument("--smol-global-batch", type=int, default=8)
    p.add_argument("--tiny-steps", type=int, default=6)
    p.add_argument("--tiny-size", default="s")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--cutoff", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--padding-free", action="store_true", help="trl_best with padding_free (SDPA)")
    p.add_argument("--skip-before", action="store_true", help="skip the before-the-fix memory runs")
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    from services.trainer.tiny import init_tiny
    from tests.realmodel import converted

    common = {"cot": str(args.cot), "lr": args.lr, "micro_batch": args.micro_batch, "cutoff": args.cutoff}
    common |= {"seed": 100, "threads": args.threads}
    trl = [{"variant": "trl_default"}, {"variant": "trl_best"}]
    if args.padding_free:
        trl.append({"variant": "trl_padding_free"})
    cotd = [{"variant": "cotd_full", "method": "full"}, {"variant": "cotd_lora", "method": "lora"}]
    padded = [{"variant": "cotd_padded", "method": "full", "padded": True}]
    before = [
        {"variant": "full_before", "method": "full", "before": True},
        {"variant": "lora_before", "method": "lora", "before": True},
    ]
    _, smol_path = converted()
    smol_common = common | {"base": str(smol_path), "steps": args.steps, "items": args.smol_items}
    smol_common |= {"global_batch": args.smol_global_batch}
    smol = run_case(
        "smollm2", str(smol_path), smol_common, cotd + padded + trl + ([] if args.skip_before else before)
    )
    with tempfile.TemporaryDirectory() as tmp:
        tiny_base = init_tiny(Path(tmp) / "base", corpus=[str(args.cot)], size=args.tiny_size)
        tiny_common = common | {"base": str(tiny_base), "steps": args.tiny_steps, "items": 10_000}
        tiny_common |= {"global_batch": 64}
        tiny = run_case(f"tiny-{args.tiny_size}", str(tiny_base), tiny_common, cotd[:1] + trl)

    for runs in (smol, tiny):  # TRL at its best: the faster of its grouped and padding-free runs
        if runs.get("trl_padding_free", {}).get("tokens_per_s", 0) > runs["trl_best"]["tokens_per_s"]:
            runs["trl_grouped"], runs["trl_best"] = runs["trl_best"], runs["trl_padding_free"]

    def ratio(runs: dict, peer: str) -> float:
        return round(runs["cotd_full"]["tokens_per_s"] / runs[peer]["tokens_per_s"], 3)

    summary = {
        "cot_file": args.cot.name,
        "device": "cpu",
        "threads": args.threads,
        "smol_items": args.smol_items,
        "smol_steps": args.steps,
        "smol_global_batch": args.smol_global_batch,
        "micro_batch": args.micro_batch,
        "smol_cotd_tok_s": round(smol["cotd_full"]["tokens_per_s"], 1),
        "smol_trl_default_tok_s": round(smol["trl_default"]["tokens_per_s"], 1),
        "smol_trl_best_tok_s": round(smol["trl_best"]["tokens_per_s"], 1),
        "smol_trl_best_is_padding_free": smol["trl_best"] is smol.get("trl_padding_free"),
        "smol_ratio_vs_trl_best": ratio(smol, "trl_best"),
        "smol_ratio_vs_trl_default": ratio(smol, "trl_default"),
        "smol_target_1_2x_met": ratio(smol, "trl_best") >= 1.2,
        "tiny_ratio_vs_trl_best": ratio(tiny, "trl_best"),
        "tiny_ratio_vs_trl_default": ratio(tiny, "trl_default"),
        "smol_cotd_padded_tok_s": round(smol["cotd_padded"]["tokens_per_s"], 1),
        "smol_padding_cotd": round(smol["cotd_full"]["padding_fraction"], 4),
        "smol_padding_cotd_padded": round(smol["cotd_padded"]["padding_fraction"], 4),
        "smol_padding_trl_best": round(smol["trl_best"]["padding_fraction"], 4),
        "smol_loss_cotd": smol["cotd_full"]["losses"],
        "smol_loss_trl_best": smol["trl_best"]["losses"],
        "smol_peak_gib_cotd_full": _gib(smol, "cotd_full"),
        "smol_peak_gib_cotd_lora": _gib(smol, "cotd_lora"),
        "smol_peak_gib_trl_best": _gib(smol, "trl_best"),
        "smol_peak_gib_full_before": _gib(smol, "full_before"),
        "smol_peak_gib_lora_before": _gib(smol, "lora_before"),
        "lora_below_full": smol["cotd_lora"]["peak_rss_bytes"] < smol["cotd_full"]["peak_rss_bytes"],
    }
    doc = summary | {
        "versions": versions(),
        "trl_best_settings": {
            "completion_only_loss": True,
            "train_sampling_strategy": "group_by_length",
            "padding_free": "tried as trl_padding_free" if args.padding_free else False,
            "attn_implementation": "sdpa",
            "gradient_checkpointing": False,
            "bf16": False,
            "packing": False,
        },
        "runs": {"smollm2": smol, f"tiny-{args.tiny_size}": tiny},
    }
    out = ROOT / "bench" / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print("BENCH train " + " ".join(f"{k}={json.dumps(v).replace(' ', '')}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
