"""GPU check of the trainer (< 3 minutes on one H100/H200; no downloads, only the repo installed).

Builds a ~100M-parameter Llama student offline (the tiny BPE tokenizer from `init_tiny` on the
built-in arith text, a wider and deeper config), then on CUDA in bf16:
  1. LoRA for a fixed number of steps,
  2. full fine-tuning for the same steps,
  3. QLoRA when bitsandbytes is installed (skipped with a line saying so otherwise),
  4. the evaluator's batched generation on the full and LoRA checkpoints.
Each prints one JSON line (tokens/s, padding fraction, peak memory, loss); the last line is
`BENCH gpu_train key=value ...`, and the figures go to bench/results/gpu_train.json.

    python bench/gpu_train.py [--steps 30] [--hidden 768] [--layers 12]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build_student(out: Path, hidden: int, layers: int) -> Path:
    """A randomly initialised Llama with the tiny arith tokenizer, saved as a local base."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from services.trainer.tiny import init_tiny

    tok_dir = init_tiny(out / "tok", size="xs")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
        intermediate_size=hidden * 8 // 3 // 64 * 64,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    base = out / "base"
    model.save_pretrained(base, safe_serialization=True)
    tok.save_pretrained(base)
    return base


def arith_pairs(n: int, level: int = 6):
    """(question, rationale) pairs and test questions from the built-in arith dataset."""
    from services.generator.teachers.procedural import rationale
    from shared.datasets.arith import load_arith_split, make_problems
    from shared.specs import ArithParams

    pairs = [(p.question().text, rationale(p, level)) for p in make_problems(ArithParams(), "train", n)]
    return pairs, load_arith_split("test", limit=128)


def train(base: Path, pairs, work: Path, method: str, steps: int, micro: int) -> dict:
    """One timed training run; the summary line."""
    from services.trainer.recipe import train_sft
    from shared.config import TrainingConfig

    lr = {"full": 3e-4, "lora": 1e-3, "qlora": 1e-3}[method]
    cfg = TrainingConfig(
        method=method,
        lr=lr,
        warmup_steps=3,
        max_steps=steps,
        global_batch_size=64,
        micro_batch_size=micro,
        cutoff=512,
        save_every_steps=max(2, steps // 2),
        lora_r=16,
    )
    torch.cuda.empty_cache()
    t0 = time.perf_counter()
    s = train_sft(
        str(base), pairs, work / "out", work / "state", cfg, seed=100, template="auto", device_setting="cuda"
    )
    return {
        "run": f"train_{method}",
        "complete": s["complete"],
        "steps": s["steps"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "tokens_per_s": round(s["tokens_per_s"]),
        "padding_fraction": round(s["padding_fraction"], 4),
        "peak_memory_gib": round(s["peak_memory_bytes"] / 2**30, 3),
        "first_loss": round(s["first_loss"], 4),
        "final_loss": round(s["final_loss"], 4),
    }


def evaluate(ckpt: Path, questions, out: Path, name: str) -> dict:
    """The evaluator's generate path on CUDA for one checkpoint."""
    from services.evaluator.evaluate import evaluate_model
    from shared.config import EvaluationConfig

    t0 = time.perf_counter()
    m = evaluate_model(
        ckpt,
        questions,
        out,
        EvaluationConfig(batch_size=64, max_new_tokens=96),
        template="auto",
        device_setting="cuda",
    )
    return {
        "run": f"eval_{name}",
        "n": m["n"],
        "accuracy": m["accuracy"],
        "extraction_failure_rate": m["extraction_failure_rate"],
        "mean_output_tokens": round(m["mean_output_tokens"], 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--examples", type=int, default=4000)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_train: no CUDA device visible")
    logging.basicConfig(level=logging.WARNING)
    from safetensors.torch import load_file
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    lines: list[dict] = [
        {
            "run": "device",
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "flash_attn": importlib.util.find_spec("flash_attn") is not None,
            "bitsandbytes": importlib.util.find_spec("bitsandbytes") is not None,
        }
    ]
    print(json.dumps(lines[0]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = build_student(root, args.hidden, args.layers)
        n_params = sum(t.numel() for t in load_file(str(base / "model.safetensors")).values())
        pairs, test = arith_pairs(args.examples)
        print(
            json.dumps({"run": "student", "params_m": round(n_params / 1e6, 1), "examples": len(pairs)}),
            flush=True,
        )
        methods = ["lora", "full"] + (["qlora"] if lines[0]["bitsandbytes"] else [])
        for method in methods:
            res = train(base, pairs, root / method, method, args.steps, args.micro_batch)
            lines.append(res)
            print(json.dumps(res), flush=True)
        if not lines[0]["bitsandbytes"]:
            print(json.dumps({"run": "train_qlora", "skipped": "bitsandbytes is not installed"}), flush=True)
        for method in ("full", "lora"):
            res = evaluate(root / method / "out", test, root / f"eval_{method}", method)
            lines.append(res)
            print(json.dumps(res), flush=True)
    out = ROOT / "bench" / "results" / "gpu_train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(lines, indent=2))
    figures = {
        f"{r['run']}_{k}": r[k]
        for r in lines
        if r["run"].startswith("train_") and "skipped" not in r
        for k in ("tokens_per_s", "peak_memory_gib")
    }
    figures |= {f"{r['run']}_accuracy": r["accuracy"] for r in lines if r["run"].startswith("eval_")}
    print("BENCH gpu_train " + " ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
