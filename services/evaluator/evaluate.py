"""Score a checkpoint on a test set: batched generation, extraction, grading, metrics. Resumable."""

from __future__ import annotations

import json
import time
from pathlib import Path

from services.evaluator.generate import Generation, generate_batched
from services.trainer.templates import end_token, render_prompt
from shared.answers import extract_answer, grade_many
from shared.config import EvaluationConfig
from shared.datasets.base import Question
from shared.device import pick_device

PARTIAL = "predictions.partial.jsonl"


def load_for_inference(model_dir: str | Path, device, trust_remote_code: bool = False):
    """A saved checkpoint (full weights, or a LoRA adapter over its base) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok


def score_outputs(questions: list[Question], prompts: list[str], gens: list[Generation]) -> list[dict]:
    """Prediction rows (id, prompt, output, extracted, gold, correct, rule, n_tokens)."""
    extracted = [extract_answer(g.text, q.task, q.choices) for q, g in zip(questions, gens, strict=True)]
    graded: list[bool | None] = []
    by_task: dict = {}
    for i, q in enumerate(questions):
        by_task.setdefault(q.task, []).append(i)
    graded = [None] * len(questions)
    for task, idx in by_task.items():
        res = grade_many([extracted[i].value for i in idx], [questions[i].gold for i in idx], task)
        for i, r in zip(idx, res, strict=True):
            graded[i] = r
    return [
        {
            "id": q.id,
            "prompt": p,
            "output": g.text,
            "extracted": e.value,
            "gold": q.gold,
            "correct": bool(c),
            "grading_timeout": c is None,
            "rule": e.rule,
            "n_tokens": g.n_tokens,
        }
        for q, p, g, e, c in zip(questions, prompts, gens, extracted, graded, strict=True)
    ]


def summarize(rows: list[dict], wall_s: float) -> dict:
    """metrics.json: accuracy with a Wilson 95% CI, n, extraction failures, output tokens, speed."""
    from shared.stats import wilson_interval

    n = len(rows)
    k = sum(r["correct"] for r in rows)
    lo, hi = wilson_interval(k, n)
    tokens = sum(r["n_tokens"] for r in rows)
    return {
        "accuracy": k / n if n else 0.0,
        "ci_low": lo,
        "ci_high": hi,
        "n": n,
        "correct": k,
        "extraction_failure_rate": sum(r["extracted"] is None for r in rows) / n if n else 0.0,
        "grading_timeouts": sum(r.get("grading_timeout", False) for r in rows),
        "mean_output_tokens": tokens / n if n else 0.0,
        "wall_s": wall_s,
        "tokens_per_s": tokens / wall_s if wall_s else 0.0,
    }


def evaluate_model(
    model_dir: str | Path,
    questions: list[Question],
    out_dir: Path,
    cfg: EvaluationConfig,
    template: str = "auto",
    device_setting: str = "auto",
    trust_remote_code: bool = False,
) -> dict:
    """Generate, extract and grade; write predictions.jsonl and metrics.json into `out_dir`.

    Finished batches are appended to `predictions.partial.jsonl`, so a killed run resumes.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL
    done: dict[str, dict] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                row = json.loads(line)
                done[row["id"]] = row
            except (json.JSONDecodeError, KeyError):
                continue  # a torn last line from a kill
    device = pick_device(device_setting)
    t0 = time.perf_counter()
    todo = [q for q in questions if q.id not in done]
    if todo:
        model, tok = load_for_inference(model_dir, device, trust_remote_code)
        prompts = [render_prompt(template, tok, q.text) for q in todo]
        end_ids = sorted({tok.convert_tokens_to_ids(end_token(template, tok)), tok.eos_token_id} - {None})

        def persist(idx: list[int], gens: list[Generation]) -> None:
            rows = score_outputs([todo[i] for i in idx], [prompts[i] for i in idx], gens)
            with open(partial, "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
                    done[r["id"]] = r

        generate_batched(
            model, tok, prompts, cfg.batch_size, cfg.max_new_tokens, end_ids, cfg.stop, cfg.num_beams, cfg.sort_by_length, persist
        )
    rows = [done[q.id] for q in questions]
    metrics = summarize(rows, time.perf_counter() - t0)
    with open(out_dir / "predictions.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    partial.unlink(missing_ok=True)
    return metrics
