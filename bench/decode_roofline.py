"""Benchmark: how fast greedy decoding of SmolLM2-135M can be on this CPU, against the paper's loop.

#15 asks the evaluator for >= 20x the paper's one-prompt `generate` loop. This bench measures what
bounds that ratio, on the checkpoint and prompts of `bench/evaluate.py`'s real line, in one process:

- the model's FLOPs per generated token: 2 x the weights of every linear layer (the tied LM head
  included), plus attention over the context (4 x layers x width x context, at the mean context);
- the core's peak fp32 matmul rate (`torch.mm`, best of a few large square shapes) and its rate at
  the decoding shapes of a batch of 32 (the shapes of one layer at M = 32);
- the cost per generated token of the paper's loop (batch 1) and of ours (`greedy_batch`, batch 32),
  both decoding `--tokens` tokens after the same SVAMP prompts with the same KV cache code, the
  prefill taken out (a one-step run subtracted): the prefill is the same work on both sides;
- two bounds on the ratio: at the core's peak rate a token costs at least FLOPs / peak, and at the
  rates `torch.mm` reaches at the decoding shapes of batch 32 at least the sum of each shape's
  FLOPs / its rate. No batching beats the paper's loop by more than its cost per token over that
  floor; the target is called reachable only if the second (attainable) bound allows it.

Times are process CPU seconds on `--threads` threads (1 by default, as `bench/evaluate.py`).
Prints ``BENCH decode_roofline key=value ...`` and writes ``bench/results/decode_roofline.json``.

    python bench/decode_roofline.py [--tokens 64] [--batch-size 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.evaluate import real_checkpoint, svamp_questions  # noqa: E402
from services.evaluator.evaluate import load_for_inference  # noqa: E402
from services.evaluator.generate import _cache_kwarg, encode_prompts, greedy_batch, left_pad  # noqa: E402
from services.trainer.templates import render_prompt  # noqa: E402

TARGET = 20.0  # the ratio over the paper's loop


def _cpu(fn) -> float:
    """Process CPU seconds of fn() (best of three)."""
    best = float("inf")
    for _ in range(3):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return best


def matmul_gflops(m: int, k: int, n: int, reps: int) -> float:
    """fp32 GFLOP/s of `torch.mm` at (m x k) @ (k x n)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    return 2 * m * k * n * reps / _cpu(lambda: [torch.mm(a, b) for _ in range(reps)]) / 1e9


def flops_per_token(model, context: float) -> dict:
    """Linear-layer and attention FLOPs of one generated token at a given context length."""
    cfg = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    attention = 4 * cfg.num_hidden_layers * width * context
    return {
        "linear_params": linear,
        "linear": 2 * linear,
        "attention": attention,
        "total": 2 * linear + attention,
    }


def decode_cost(model, tok, prompts: list[str], batch: int, tokens: int) -> float:
    """CPU seconds per generated token of `greedy_batch` on the first `batch` prompts, prefill excluded.

    A run of `tokens` steps minus a run of one step (the prefill and its first token), per token.
    """
    ids, mask = left_pad(encode_prompts(tok, prompts[:batch]), tok.pad_token_id or 0)
    kw = _cache_kwarg(model)

    def run(n: int):
        def go() -> None:
            out = greedy_batch(model, tok, ids, mask, n, [-1], cache_kwarg=kw)  # rows never end
            assert all(len(o) == n for o in out)

        return go

    with torch.inference_mode():
        run(2)()
        return (_cpu(run(tokens)) - _cpu(run(1))) / (batch * (tokens - 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64, help="Tokens decoded per prompt.")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode_roofline.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    questions = svamp_questions(args.batch_size)
    ckpt = real_checkpoint() if questions else None
    if not questions or ckpt is None:
        raise SystemExit(
            "decode_roofline: needs ../shared/data and the SmolLM2 checkpoint (python -m tests.realmodel)"
        )
    model, tok = load_for_inference(ckpt, torch.device("cpu"))
    model.eval()
    prompts = [render_prompt("auto", tok, q.text) for q in questions]
    prompt_len = sum(len(e) for e in encode_prompts(tok, prompts)) / len(prompts)
    flops = flops_per_token(model, prompt_len + args.tokens / 2)

    cfg = model.config
    h, inter = cfg.hidden_size, cfg.intermediate_size
    peak = max(matmul_gflops(s, s, s, 4) for s in (1024, 2048))
    at_batch = {  # one layer's matmuls at M = batch (q/o, k/v, MLP up, MLP down) and the LM head
        f"{h}x{h}": matmul_gflops(args.batch_size, h, h, 400),
        f"{h}x{inter}": matmul_gflops(args.batch_size, h, inter, 200),
        f"{inter}x{h}": matmul_gflops(args.batch_size, inter, h, 200),
        f"{h}x{cfg.vocab_size}": matmul_gflops(args.batch_size, h, cfg.vocab_size, 10),
    }
    paper = decode_cost(model, tok, prompts, 1, args.tokens)
    ours = decode_cost(model, tok, prompts, args.batch_size, args.tokens)
    floor = flops["total"] / (peak * 1e9)
    n_layers, head = cfg.num_hidden_layers, cfg.hidden_size * cfg.vocab_size
    per_layer = {  # linear weights of one layer by matmul shape (Llama: q, o square; k, v narrower)
        f"{h}x{h}": sum(
            m.weight.numel()
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and "self_attn" in n
        )
        / n_layers,
        f"{h}x{inter}": 2 * h * inter,
        f"{inter}x{h}": h * inter,
    }
    floor_at_batch = (
        sum(2 * n_layers * w / (at_batch[k] * 1e9) for k, w in per_layer.items())
        + 2 * head / (at_batch[f"{h}x{cfg.vocab_size}"] * 1e9)
        + flops["attention"] / (peak * 1e9)
    )
    result = {
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "threads": args.threads,
        "checkpoint": str(ckpt),
        "mean_prompt_tokens": round(prompt_len, 1),
        "tokens": args.tokens,
        "batch_size": args.batch_size,
        "flops_per_token": flops,
        "peak_matmul_gflops": round(peak, 1),
        "matmul_gflops_at_batch": {k: round(v, 1) for k, v in at_batch.items()},
        "ms_per_token": {
            "paper_batch1": round(1000 * paper, 2),
            f"ours_batch{args.batch_size}": round(1000 * ours, 2),
            "floor_at_peak": round(1000 * floor, 2),
            f"floor_at_batch{args.batch_size}_rates": round(1000 * floor_at_batch, 2),
        },
        "achieved_gflops": {
            "paper_batch1": round(flops["total"] / paper / 1e9, 1),
            f"ours_batch{args.batch_size}": round(flops["total"] / ours / 1e9, 1),
        },
        "speedup_vs_paper_decode": round(paper / ours, 2),
        "max_speedup_vs_paper_at_peak": round(paper / floor, 2),
        f"max_speedup_vs_paper_at_batch{args.batch_size}_rates": round(paper / floor_at_batch, 2),
        "target": TARGET,
        "target_reachable_on_this_cpu": paper / floor_at_batch >= TARGET,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    kv = {
        "peak_gflops": result["peak_matmul_gflops"],
        "paper_ms_per_token": result["ms_per_token"]["paper_batch1"],
        "ours_ms_per_token": result["ms_per_token"][f"ours_batch{args.batch_size}"],
        "floor_ms_per_token": result["ms_per_token"]["floor_at_peak"],
        "ours_vs_paper": result["speedup_vs_paper_decode"],
        "max_vs_paper_at_peak": result["max_speedup_vs_paper_at_peak"],
        "max_vs_paper_at_batch_rates": result[f"max_speedup_vs_paper_at_batch{args.batch_size}_rates"],
        "target_reachable": result["target_reachable_on_this_cpu"],
    }
    print("BENCH decode_roofline " + " ".join(f"{k}={v}" for k, v in kv.items()))


if __name__ == "__main__":
    main()
