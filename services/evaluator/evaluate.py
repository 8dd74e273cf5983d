"""Score a checkpoint on a test set: batched generation, extraction, grading, metrics. Resumable.

```python
metrics = evaluate_model("ckpt/", questions, Path("out/"), EvaluationConfig())
```

writes ``out/predictions.jsonl`` (id, prompt, output, extracted, gold, correct, rule, n_tokens, and the
paper's strict extracted_strict / correct_strict) and ``out/metrics.json`` (accuracy, Wilson 95% CI,
n, extraction-failure rate, accuracy_strict, mean output tokens, wall time, tokens/s). Each finished batch is appended to ``out/predictions.partial.jsonl``, whose
first line fingerprints the model and the decoding settings; a rerun after a kill reuses the rows of
a matching partial file and generates only the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from services.evaluator.errors import EvaluationError
from services.evaluator.generate import Generation, generate_batched
from services.evaluator.scoring import score_summary
from services.trainer.templates import end_token, render_prompt
from shared.answers import extract_answer, grade_many, strict_fields
from shared.config import EvaluationConfig
from shared.datasets.base import Question, dataset_of
from shared.device import pick_device
from shared.paths import write_atomic

log = logging.getLogger("cotd.evaluator")

PARTIAL = "predictions.partial.jsonl"
BACKENDS = ("transformers", "vllm", "auto")


def load_for_inference(model_dir: str | Path, device, trust_remote_code: bool = False, base_path: str | None = None):
    """A saved checkpoint (full weights, or a LoRA adapter over its base) and its tokenizer.

    An adapter's base is found by `models.resolve_base`: a folder, a store key, or a hub id;
    `base_path` is a folder holding it on this host, when the caller has one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if (path / "adapter_config.json").exists():
        from services.trainer.models import load_adapter

        model = load_adapter(path, trust_remote_code=trust_remote_code, base_path=base_path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok


def load_tokenizer(model_dir: str | Path, trust_remote_code: bool = False):
    """The checkpoint's tokenizer alone (for the vLLM path, which loads its own weights)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(model_dir), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def checkpoint_template(model_dir: str | Path, template: str | None = None) -> str:
    """The template to evaluate with: the one given, else the one the checkpoint records, else auto.

    `auto` also defers to the recorded template (it is what `auto` resolved to when training).
    """
    from services.trainer.models import read_info

    if template not in (None, "auto"):
        return template
    info = read_info(model_dir) if Path(model_dir).is_dir() else None
    return info.template if info else "auto"


def score_outputs(questions: list[Question], prompts: list[str], gens: list[Generation]) -> list[dict]:
    """Prediction rows (id, prompt, output, extracted, gold, correct, rule, n_tokens, strict); pure.

    The strict columns are the paper's scoring of the same output (`shared.answers_strict`); the
    dataset is the one named in the question id.
    """
    extracted = [extract_answer(g.text, q.task, q.choices) for q, g in zip(questions, gens, strict=True)]
    by_task: dict = {}
    for i, q in enumerate(questions):
        by_task.setdefault(q.task, []).append(i)
    graded: list[bool | None] = [None] * len(questions)
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
            **strict_fields(g.text, q.gold, dataset_of(q.id)),
        }
        for q, p, g, e, c in zip(questions, prompts, gens, extracted, graded, strict=True)
    ]


def summarize(
    rows: list[dict], wall_s: float, generated_tokens: int | None = None, generation_s: float | None = None
) -> dict:
    """metrics.json: accuracy with a Wilson 95% CI, n, extraction failures, output tokens, speed.

    `accuracy` is our flexible extraction; `accuracy_strict` (with its interval) the paper's, both
    counting an unparsed answer as wrong.

    `tokens_per_s` is `generated_tokens / generation_s` (the tokens this run generated, so a resumed
    run is not credited with earlier work); both default to all rows' tokens over `wall_s`.
    """
    n = len(rows)
    tokens = sum(r["n_tokens"] for r in rows)
    gen_tokens = tokens if generated_tokens is None else generated_tokens
    gen_s = wall_s if generation_s is None else generation_s
    return {
        **score_summary(rows),
        "mean_output_tokens": tokens / n if n else 0.0,
        "wall_s": wall_s,
        "generated_tokens": gen_tokens,
        "generation_s": gen_s,
        "tokens_per_s": gen_tokens / gen_s if gen_s > 0 else 0.0,
    }


def resolve_backend(name: str, device) -> str:
    """`auto` is vLLM on CUDA when it is installed, else transformers; `vllm` must be installed."""
    from services.evaluator.vllm_backend import require_vllm, vllm_available

    if name not in BACKENDS:
        raise EvaluationError(f"unknown backend {name!r}: one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "vllm" if device.type == "cuda" and vllm_available() else "transformers"
    if name == "vllm":
        require_vllm()
    return name


def resume_fingerprint(model_dir: str | Path, cfg: EvaluationConfig, template: str, backend: str) -> str:
    """A hash of what determines the outputs: the checkpoint files and the decoding settings.

    Batch size and sorting are left out: they do not change greedy outputs, so a resumed run may
    use another batch size.
    """
    path = Path(model_dir).resolve()
    files = sorted((f.name, f.stat().st_size) for f in path.iterdir() if f.is_file()) if path.is_dir() else []
    settings = {"max_new_tokens": cfg.max_new_tokens, "num_beams": cfg.num_beams, "stop": list(cfg.stop)}
    blob = json.dumps(
        {"model": str(path), "files": files, "decoding": settings, "template": template, "backend": backend}
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_partial(path: Path, fingerprint: str) -> dict[str, dict]:
    """Rows of a partial predictions file written with the same fingerprint, by id.

    A torn last line (a kill mid-write) is dropped and the file rewritten without it, so that new
    rows are appended after a clean line. A file of other settings is discarded.
    """
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        head = json.loads(lines[0])["_resume"] if lines else None
    except (json.JSONDecodeError, KeyError, TypeError):
        head = None
    if head != fingerprint:
        if lines:
            log.warning("%s: written with other settings or another checkpoint; starting afresh", path)
        path.unlink()
        return {}
    done: dict[str, dict] = {}
    good = [lines[0]]
    for line in lines[1:]:
        try:
            row = json.loads(line)
            done[row["id"]] = row
            good.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    if len(good) != len(lines) or not path.read_bytes().endswith(b"\n"):
        write_atomic(path, "".join(x + "\n" for x in good))
    return done


def _observe_batch(rows: list[dict], seconds: float) -> None:
    """Update the evaluator's Prometheus metrics for one finished batch."""
    from shared import metrics as m

    tokens = sum(r["n_tokens"] for r in rows)
    m.EVALUATOR_TOKENS.inc(tokens)
    if seconds > 0:
        m.EVALUATOR_TOKENS_PER_SECOND.set(tokens / seconds)
    for r in rows:
        outcome = "unparsed" if r["extracted"] is None else "correct" if r["correct"] else "incorrect"
        m.EVALUATOR_PREDICTIONS.labels(outcome=outcome).inc()


def evaluate_model(
    model_dir: str | Path,
    questions: list[Question],
    out_dir: Path,
    cfg: EvaluationConfig,
    template: str | None = None,
    device_setting: str = "auto",
    trust_remote_code: bool = False,
    backend: str | None = None,
    check: Callable[[], None] | None = None,
    base_path: str | None = None,
) -> dict:
    """Generate, extract and grade; write predictions.jsonl and metrics.json into `out_dir`.

    `check()` is called after every batch is saved; an exception it raises stops the run (a
    cancelled grid), and the saved batches are kept for a rerun.

    `backend` is ``transformers`` (default, works everywhere), ``vllm`` (needs the package) or
    ``auto``; when None, the config's ``backend`` field is used if it has one.
    `template` None or ``auto`` is the template the checkpoint records (`checkpoint_template`);
    generation stops at that template's end token (end of turn) and at EOS.
    Finished batches are appended to `predictions.partial.jsonl`, so a killed run resumes.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(device_setting)
    template = checkpoint_template(model_dir, template)
    chosen = resolve_backend(backend or getattr(cfg, "backend", None) or "transformers", device)
    partial = out_dir / PARTIAL
    fingerprint = resume_fingerprint(model_dir, cfg, template, chosen)
    done = read_partial(partial, fingerprint)
    if done:
        log.info(
            "resuming: %d of %d predictions already made",
            sum(q.id in done for q in questions),
            len(questions),
        )
    todo = [q for q in questions if q.id not in done]
    generated_tokens, generation_s = 0, 0.0
    if todo:
        if chosen == "vllm":
            tok = load_tokenizer(model_dir, trust_remote_code)
            model = None
        else:
            model, tok = load_for_inference(model_dir, device, trust_remote_code, base_path)
        prompts = [render_prompt(template, tok, q.text) for q in todo]
        end_ids = sorted({tok.convert_tokens_to_ids(end_token(template, tok)), tok.eos_token_id} - {None})
        if not partial.exists():
            write_atomic(partial, json.dumps({"_resume": fingerprint}) + "\n")
        t_gen = last = time.perf_counter()

        def persist(idx: list[int], gens: list[Generation]) -> None:
            nonlocal generated_tokens, last
            rows = score_outputs([todo[i] for i in idx], [prompts[i] for i in idx], gens)
            with open(partial, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            for r in rows:
                done[r["id"]] = r
            generated_tokens += sum(g.n_tokens for g in gens)
            now = time.perf_counter()
            _observe_batch(rows, now - last)
            last = now
            if check:
                check()

        if chosen == "vllm":
            from services.evaluator.vllm_backend import generate_vllm

            generate_vllm(
                model_dir, tok, prompts, cfg.max_new_tokens, end_ids, stop=cfg.stop, num_beams=cfg.num_beams,
                chunk_size=max(cfg.batch_size, 256), on_batch=persist, trust_remote_code=trust_remote_code,
            )  # fmt: skip
        else:
            generate_batched(
                model, tok, prompts, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                end_token_ids=end_ids, stop=cfg.stop, num_beams=cfg.num_beams,
                sort_by_length=cfg.sort_by_length, on_batch=persist,
            )  # fmt: skip
        generation_s = time.perf_counter() - t_gen
    rows = [done[q.id] for q in questions]
    stale = [i for i, (q, r) in enumerate(zip(questions, rows, strict=True)) if r["gold"] != q.gold]
    if stale:  # the gold of a question changed since its row was written: grade its output again
        fresh = score_outputs(
            [questions[i] for i in stale],
            [rows[i]["prompt"] for i in stale],
            [Generation(rows[i]["output"], rows[i]["n_tokens"]) for i in stale],
        )
        for i, r in zip(stale, fresh, strict=True):
            rows[i] = r
    for q, r in zip(questions, rows, strict=True):
        if "correct_strict" not in r:  # a row resumed from a partial file of an older version
            r |= strict_fields(r["output"], q.gold, dataset_of(q.id))
    metrics = summarize(rows, time.perf_counter() - t0, generated_tokens, generation_s)
    metrics |= {
        "backend": chosen,
        "resumed": len(questions) - len(todo),
        "batch_size": cfg.batch_size,
        "max_new_tokens": cfg.max_new_tokens,
        "num_beams": cfg.num_beams,
        "hit_max_new_tokens": sum(r["n_tokens"] >= cfg.max_new_tokens for r in rows),
    }
    write_atomic(
        out_dir / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    return metrics
