"""`cotd grid plan`: what one or more grids will cost before they run.

For the cells of the grids (de-duplicated across them, like `cotd grid submit` does) it counts the
generate, train and evaluate tasks still to run once the artifacts already in a store are taken off,
and estimates

- teacher tokens: prompt + rationale tokens sent to and written by server teachers (tgi/openai);
- training tokens: epochs (or max_steps x global batch) x the set's sequences x their mean tokens;
- evaluation tokens: test questions x (question + generated tokens);
- GPU-hours: training and evaluation tokens over the throughput of `bench/results/throughput.json`,
  scaled by parameter count from the measured reference and marked as an estimate when scaled.

Lengths come from the data where the data is here: question and rationale lengths of local files
(recorded teachers, human rationales, answer-only), counted with the regex token counter of
`services.generator.stats`; rationales a live teacher has not written yet use the paper's mean length
at that level (`services.generator.lengths.PAPER_MEAN_WORDS`). Everything that is not counted from data is marked.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from shared.datasets.registry import DATASETS
from shared.grid import Cell, GridSpec, expand
from shared.specs import CotSetSpec, DatasetRef, StudentSpec, TeacherSpec, recorded_path
from shared.teacher_kinds import SERVER_KINDS

THROUGHPUT_FILE = Path(__file__).resolve().parents[2] / "bench" / "results" / "throughput.json"
#: BPE tokens per regex token (word runs and punctuation marks) and regex tokens per word, measured
#: with the SmolLM2 tokenizer on 300 rationales each of the paper's SVAMP, StrategyQA, OpenBookQA and
#: MATH files (1.24 / 1.11 / 1.03 / 1.32 and 1.16 / 1.15 / 1.15 / 1.30)
BPE_PER_REGEX_TOKEN = 1.17
REGEX_TOKENS_PER_WORD = 1.19
#: train / test sizes of the hub splits, for datasets without local files (the paper's splits)
HUB_SIZES: dict[str, tuple[int, int]] = {
    "svamp": (700, 300),
    "gsm8k": (7473, 1319),
    "aqua": (6940, 254),
    "math": (1297, 500),
    "csqa": (9740, 1221),
    "openbookqa": (4957, 500),
    "strategyqa": (2000, 290),
}
DEFAULT_QUESTION_TOKENS = 60.0
TEMPLATE_TOKENS = 12  # chat template and end token around each training sequence
#: parameters of the paper's students (hub ids); others are read from a local config.json
KNOWN_PARAMETERS: dict[str, int] = {
    "meta-llama/Llama-3.2-1B": 1_236_000_000,
    "meta-llama/Llama-3.2-3B": 3_213_000_000,
    "google/gemma-2b": 2_506_000_000,
    "bigscience/bloom-560m": 559_000_000,
    "bigscience/bloom-1b1": 1_065_000_000,
    "bigscience/bloom-1b7": 1_722_000_000,
    "bigscience/bloom-3b": 3_003_000_000,
    "tiny:xs": 93_000,
    "tiny:s": 157_000,
}


class StageCount(BaseModel):
    """Tasks of one stage: unique after de-duplication, of which already published (cache hits)."""

    unique: int = Field(description="Distinct artifacts the grids need.")
    cached: int = Field(description="Of those, already in the store.")
    to_run: int = Field(description="Tasks that will run.")


class Estimate(BaseModel):
    """A figure and whether any part of it was estimated rather than counted or measured."""

    value: float | None = Field(description="The figure; None when it cannot be estimated.")
    estimated: bool = Field(description="True when a length or a throughput was not counted or measured.")
    notes: list[str] = Field(
        default_factory=list, description="What was estimated, or why there is no value."
    )


class Plan(BaseModel):
    """`cotd grid plan`: tasks, tokens and GPU-hours of the work still to run."""

    grids: list[str] = Field(description="Grid names.")
    cells: int = Field(description="Cells over all grids (a cell in two grids counted once).")
    generate: StageCount
    train: StageCount
    evaluate: StageCount
    server_generate: int = Field(
        description="Generate tasks that call a teacher server (the rest read files)."
    )
    teacher_tokens: Estimate = Field(description="Prompt + rationale tokens of the server teachers.")
    training_tokens: Estimate = Field(description="Tokens the trainer processes (all epochs).")
    evaluation_tokens: Estimate = Field(description="Prompt + generated tokens of the evaluations.")
    train_gpu_hours: Estimate
    evaluate_gpu_hours: Estimate
    gpu_hours: Estimate = Field(description="Training + evaluation GPU-hours.")
    gpus: int = Field(description="GPUs the wall-clock figure assumes.")
    hours_on_gpus: Estimate = Field(description="gpu_hours / gpus, assuming the queue keeps every GPU busy.")
    throughput: list[dict[str, Any]] = Field(description="The throughput entries used (from bench/results).")


# --- lengths -----------------------------------------------------------------------------------


def _tokens(text: str) -> float:
    from services.generator.stats import fallback_tokens

    return fallback_tokens(text) * BPE_PER_REGEX_TOKEN


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.fmean(xs) if xs else 0.0


@lru_cache(maxsize=256)
def _split_lengths(ref_json: str, split: str) -> tuple[int, float, float | None, bool]:
    """(questions, mean question tokens, mean own-rationale tokens, counted) of a dataset split."""
    ref = DatasetRef.model_validate_json(ref_json)
    path = ref.train_file if split == "train" else ref.test_file
    size = ref.train_size if split == "train" else ref.test_size
    if not DATASETS[ref.name].generated and not path:
        n = HUB_SIZES[ref.name][0 if split == "train" else 1]
        return (min(n, size) if size else n), DEFAULT_QUESTION_TOKENS, None, False
    from shared.datasets.splits import load_split

    qs = load_split(ref, split)
    rats = [_tokens(q.rationale) for q in qs if q.rationale]
    return len(qs), _mean(_tokens(q.text) for q in qs), (_mean(rats) if rats else None), True


@lru_cache(maxsize=1024)
def _file_rationale_tokens(path: str, dataset: str) -> float:
    from shared.cotset import read_cot_file

    return _mean(_tokens(r.rationale) for r in read_cot_file(path, dataset) if r.rationale)


def rationale_tokens(cot: CotSetSpec) -> tuple[float, bool]:
    """(mean rationale tokens of the CoT set, counted from data) for one CoT set."""
    t: TeacherSpec = cot.teacher
    if t.kind == "answer-only":
        return _tokens("The answer is 42"), True
    if t.kind == "recorded" or (t.kind == "human" and t.files):
        path = recorded_path(t.files, cot.level, cot.format)  # type: ignore[arg-type]
        if Path(path).is_file():
            return _file_rationale_tokens(path, cot.dataset.name), True
    if t.kind == "human":
        own = _split_lengths(cot.dataset.model_dump_json(), "train")[2]
        if own is not None:
            return own, True
    if t.kind == "procedural":
        from services.generator.teachers.procedural import rationale
        from shared.datasets.arith import make_problems

        probs = make_problems(cot.dataset.arith, "train", 200)
        return _mean(_tokens(rationale(p, cot.level or 1, cot.format or "cot")) for p in probs), True
    from services.generator.lengths import paper_level_words

    words = paper_level_words()[cot.level or 3]
    return words * REGEX_TOKENS_PER_WORD * BPE_PER_REGEX_TOKEN, False


def _prompt_tokens(cot: CotSetSpec) -> float:
    from services.generator.prompts import system_prompt
    from shared.datasets.registry import task_type

    return _tokens(system_prompt(task_type(cot.dataset.name), cot.level or 1, cot.format or "cot"))


# --- throughput --------------------------------------------------------------------------------


def load_throughput(path: str | Path = THROUGHPUT_FILE) -> list[dict[str, Any]]:
    """The measured throughput entries."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["entries"]


def student_parameters(student: StudentSpec) -> int | None:
    """The student's parameter count: the table, or a local config.json; None when unknown."""
    if student.model in KNOWN_PARAMETERS:
        return KNOWN_PARAMETERS[student.model]
    config = Path(student.model) / "config.json"
    if config.is_file():
        c = json.loads(config.read_text(encoding="utf-8"))
        h, layers, vocab = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
        inter = c.get("intermediate_size") or (4 * h if h else None)
        if h and layers and vocab and inter:
            return int(layers * (4 * h * h + 3 * h * inter) + 2 * vocab * h)
    return None


def tokens_per_s(
    entries: list[dict[str, Any]], stage: str, method: str, params: int
) -> tuple[float, bool, str]:
    """(tokens/s, measured, source) for a stage and method at `params` parameters, scaled from the table."""
    want = method if stage == "train" else "greedy"
    cands = [
        e for e in entries if e["stage"] == stage and e["method"] == ("lora" if want == "qlora" else want)
    ]
    if not cands:
        raise ValueError(f"no {stage} throughput for method {method!r} in {THROUGHPUT_FILE.name}")
    ref = min(cands, key=lambda e: abs(e["parameters"] - params))
    exact = ref["parameters"] == params and ref.get("measured", False)
    return ref["tokens_per_s"] * ref["parameters"] / params, exact, f"{ref['gpu']}, {ref['source']}"


# --- the plan ----------------------------------------------------------------------------------


def published_keys(store: str | None, context=None) -> dict[str, set[str]]:
    """Keys already published, by kind: none, a local store folder, or ``settings`` (the configured store)."""
    if store is None:
        return {}
    if store == "settings":
        if context is None:
            raise ValueError("--store settings needs the configured context")
        st = context().store
    else:
        from shared.artifacts import LocalStore

        if not Path(store).is_dir():
            raise FileNotFoundError(f"--store {store}: no such folder")
        st = LocalStore(store)
    return {kind: set(st.keys(kind)) for kind in ("cotsets", "checkpoints", "evals")}


def _count(keys: dict[str, Any], published: set[str]) -> StageCount:
    cached = sum(k in published for k in keys)
    return StageCount(unique=len(keys), cached=cached, to_run=len(keys) - cached)


def _train_tokens(cell: Cell, n_train: int, q_tok: float, r_tok: float) -> float:
    tr = cell.checkpoint.training
    seq = min(q_tok + r_tok + TEMPLATE_TOKENS, tr.cutoff)
    if tr.max_steps:
        return tr.max_steps * tr.global_batch_size * seq
    return tr.epochs * n_train * seq


def plan_grids(
    grids: list[GridSpec],
    published: dict[str, set[str]] | None = None,
    gpus: int = 8,
    throughput: list[dict[str, Any]] | None = None,
) -> Plan:
    """The plan of `grids`: `published` holds the keys already in the store, by kind."""
    published = published or {}
    entries = throughput if throughput is not None else load_throughput()
    cells: dict[str, Cell] = {}
    for g in grids:
        for c in expand(g):
            cells.setdefault(c.key, c)
    cots = {c.cot.key: c for c in cells.values()}
    cks = {c.checkpoint.key: c for c in cells.values()}
    todo_cots = {k: c for k, c in cots.items() if k not in published.get("cotsets", set())}
    todo_cks = {k: c for k, c in cks.items() if k not in published.get("checkpoints", set())}
    todo_evs = {k: c for k, c in cells.items() if k not in published.get("evals", set())}

    teacher, teacher_est = 0.0, False
    for c in todo_cots.values():
        if c.cot.teacher.kind in SERVER_KINDS:
            n, q_tok, _, counted = _split_lengths(c.cot.dataset.model_dump_json(), "train")
            r_tok, _ = rationale_tokens(c.cot)
            teacher += n * (_prompt_tokens(c.cot) + q_tok + r_tok)
            teacher_est = True  # a live teacher's rationale lengths are the paper's, not counted

    train_tok, train_h, train_est, train_notes = 0.0, 0.0, False, set()
    for c in todo_cks.values():
        n, q_tok, _, counted = _split_lengths(c.cot.dataset.model_dump_json(), "train")
        r_tok, r_counted = rationale_tokens(c.cot)
        tok = _train_tokens(c, n, q_tok, r_tok)
        train_tok += tok
        train_est |= not (counted and r_counted)
        params = student_parameters(c.checkpoint.student)
        if params is None:
            train_notes.add(f"{c.student}: unknown parameter count, no hours")
            continue
        tps, measured, source = tokens_per_s(entries, "train", c.checkpoint.training.method, params)
        train_h += tok / tps / 3600
        if not measured:
            train_notes.add(f"scaled by parameter count from {source}")

    eval_tok, eval_h, eval_notes = 0.0, 0.0, set()
    for c in todo_evs.values():
        n, q_tok, _, counted = _split_lengths(c.evaluation.dataset.model_dump_json(), "test")
        if c.evaluation.evaluation.test_size:
            n = min(n, c.evaluation.evaluation.test_size)
        gen = min(rationale_tokens(c.cot)[0], c.evaluation.evaluation.max_new_tokens)
        eval_tok += n * (q_tok + gen)
        params = student_parameters(c.checkpoint.student)
        if params is None:
            eval_notes.add(f"{c.student}: unknown parameter count, no hours")
            continue
        tps, measured, source = tokens_per_s(entries, "evaluate", "greedy", params)
        eval_h += n * gen * c.evaluation.evaluation.num_beams / tps / 3600
        if not measured:
            eval_notes.add(f"scaled by parameter count from {source}")
    length_note = "rationale lengths of live teachers: the paper's mean words per level"
    total = train_h + eval_h
    est = bool(train_notes or eval_notes)
    return Plan(
        grids=[g.name for g in grids],
        cells=len(cells),
        generate=_count(cots, published.get("cotsets", set())),
        train=_count(cks, published.get("checkpoints", set())),
        evaluate=_count(cells, published.get("evals", set())),
        server_generate=sum(c.cot.teacher.kind in SERVER_KINDS for c in todo_cots.values()),
        teacher_tokens=Estimate(
            value=teacher, estimated=teacher_est, notes=[length_note] if teacher_est else []
        ),
        training_tokens=Estimate(
            value=train_tok, estimated=train_est, notes=[length_note] if train_est else []
        ),
        evaluation_tokens=Estimate(
            value=eval_tok,
            estimated=True,
            notes=["generated tokens: the mean rationale length of the student's training set"],
        ),
        train_gpu_hours=Estimate(value=train_h, estimated=bool(train_notes), notes=sorted(train_notes)),
        evaluate_gpu_hours=Estimate(value=eval_h, estimated=bool(eval_notes), notes=sorted(eval_notes)),
        gpu_hours=Estimate(value=total, estimated=est),
        gpus=gpus,
        hours_on_gpus=Estimate(
            value=total / gpus, estimated=est, notes=["every GPU kept busy by the queues"]
        ),
        throughput=entries,
    )


def _fmt_tokens(x: float | None) -> str:
    if x is None:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def format_plan(plan: Plan) -> str:
    """The plan as a plain-text table; `~` marks an estimate."""

    def est(e: Estimate, text: str) -> str:
        return ("~" if e.estimated else "") + text

    rows = [
        ("stage", "unique", "cached", "to run"),
        *(
            (name, str(s.unique), str(s.cached), str(s.to_run))
            for name, s in (("generate", plan.generate), ("train", plan.train), ("evaluate", plan.evaluate))
        ),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"grids: {', '.join(plan.grids)} ({plan.cells} cells)", ""]
    lines += [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, width, strict=True)))
        for r in rows
    ]
    hours = plan.hours_on_gpus.value
    lines += [
        "",
        f"generate tasks calling a teacher server: {plan.server_generate}",
        f"teacher tokens:     {est(plan.teacher_tokens, _fmt_tokens(plan.teacher_tokens.value))}",
        f"training tokens:    {est(plan.training_tokens, _fmt_tokens(plan.training_tokens.value))}",
        f"evaluation tokens:  {est(plan.evaluation_tokens, _fmt_tokens(plan.evaluation_tokens.value))}",
        f"GPU-hours:          {est(plan.gpu_hours, f'{plan.gpu_hours.value:.1f}')} "
        f"(train {plan.train_gpu_hours.value:.1f}, evaluate {plan.evaluate_gpu_hours.value:.1f})",
        f"hours on {plan.gpus} GPUs:   {est(plan.hours_on_gpus, f'{hours:.1f}')}",
    ]
    notes = sorted(
        {n for e in (plan.teacher_tokens, plan.training_tokens, plan.evaluation_tokens, plan.train_gpu_hours,
                     plan.evaluate_gpu_hours, plan.hours_on_gpus) for n in e.notes}
    )  # fmt: skip
    if notes:
        lines += ["", "~ estimate:"] + [f"  - {n}" for n in notes]
    return "\n".join(lines)
