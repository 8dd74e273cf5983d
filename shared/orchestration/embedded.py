"""Embedded mode (`cotd run`): the whole grid in-process, artifacts in a local folder.

It runs the same stage functions as the workers; a cell already done is not recomputed.
CoT sets are generated first; then each checkpoint is trained and evaluated as one job, and
on CPU those jobs run in parallel processes (one torch thread each), since tiny models do not
use two cores well from one process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from shared.artifacts import LocalStore
from shared.errors import reason_of
from shared.grid import Cell, GridSpec, expand
from shared.orchestration.results import cell_row, results_doc
from shared.orchestration.stages import evaluate_stage, generate_stage, train_stage
from shared.specs import CheckpointSpec, EvalSpec


def _unique(cells: list[Cell], attr: str) -> list:
    seen: dict[str, object] = {}
    for c in cells:
        spec = getattr(c, attr)
        seen.setdefault(spec.key, spec)
    return list(seen.values())


def train_and_evaluate(store_root: str, ck_json: str, ev_jsons: list[str], device: str, threads: int | None) -> list[dict]:
    """One job: train a checkpoint, then run its evaluations. Returns one outcome per artifact."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    store = LocalStore(store_root)
    ck = CheckpointSpec.model_validate_json(ck_json)
    try:
        res = train_stage(ck, store, device=device)
    except Exception as e:  # reported per cell; other jobs go on
        return [{"stage": "train", "key": ck.key, "error": reason_of("train", e)}]
    out = [{"stage": "train", "key": ck.key, "cached": res.cached}]
    for ej in ev_jsons:
        ev = EvalSpec.model_validate_json(ej)
        try:
            r = evaluate_stage(ev, store, device=device)
            out.append({"stage": "evaluate", "key": ev.key, "cached": r.cached})
        except Exception as e:
            out.append({"stage": "evaluate", "key": ev.key, "error": reason_of("evaluate", e)})
    return out


def default_jobs(device: str) -> int:
    """2 parallel jobs on a CPU machine with 2+ cores, else 1."""
    import torch

    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return 1 if on_gpu else max(1, min(2, os.cpu_count() or 1))


def run_grid(
    grid: GridSpec, out: Path, echo: Callable[[str], None] = print, device: str = "auto", jobs: int | None = None
) -> dict:
    """Run every cell of `grid`; write results.json and the report under `out`. Returns results."""
    out.mkdir(parents=True, exist_ok=True)
    store = LocalStore(out / "artifacts")
    cells = expand(grid)
    (out / "grid.json").write_text(grid.model_dump_json(indent=2))
    failed: dict[str, str] = {}
    counts = {"computed": 0, "cached": 0, "failed": 0}
    t0 = time.perf_counter()
    echo(f"grid {grid.name}: {len(cells)} cells")

    def note(outcome: dict, bar: tqdm) -> None:
        if "error" in outcome:
            failed[outcome["key"]] = outcome["error"]
            counts["failed"] += 1
            bar.write(f"  grid={grid.name} {outcome['stage']} {outcome['key']}: FAILED {outcome['error']}")
        elif outcome["cached"]:
            counts["cached"] += 1
            bar.write(f"  grid={grid.name} {outcome['stage']} {outcome['key']}: cached, not recomputed")
        else:
            counts["computed"] += 1

    cots = _unique(cells, "cot")
    with tqdm(total=len(cots), desc="generate", unit="set", dynamic_ncols=True) as bar:
        for spec in cots:
            try:
                res = generate_stage(spec, store)
                note({"stage": "generate", "key": spec.key, "cached": res.cached}, bar)
            except Exception as e:
                note({"stage": "generate", "key": spec.key, "error": reason_of("generate", e)}, bar)
            bar.update()

    evals_of: dict[str, list[EvalSpec]] = {}
    for c in cells:
        evs = evals_of.setdefault(c.checkpoint.key, [])
        if all(e.key != c.evaluation.key for e in evs):
            evs.append(c.evaluation)
    checkpoints = [ck for ck in _unique(cells, "checkpoint") if ck.cot.key not in failed]
    n_jobs = jobs or default_jobs(device)
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else None
    args = [(str(store.root), ck.model_dump_json(), [e.model_dump_json() for e in evals_of[ck.key]], device, threads) for ck in checkpoints]
    with tqdm(total=len(args), desc="train+eval", unit="student", dynamic_ncols=True) as bar:
        if n_jobs == 1 or len(args) <= 1:
            for a in args:
                for o in train_and_evaluate(*a):
                    note(o, bar)
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
                futures: list[Future] = [pool.submit(train_and_evaluate, *a) for a in args]
                for fut in as_completed(futures):
                    for o in fut.result():
                        note(o, bar)
                    bar.update()

    rows = []
    for c in cells:
        err = next((failed[k] for k in (c.cot.key, c.checkpoint.key, c.evaluation.key) if k in failed), None)
        rows.append(cell_row(c, store, status="failed" if err else None, error=err))
    results = results_doc(grid, rows)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _write_report(out, echo)
    echo(
        f"done in {time.perf_counter() - t0:.1f}s: {counts['computed']} artifacts computed, "
        f"{counts['cached']} cached, {counts['failed']} failed -> {out / 'results.json'}"
    )
    return results


def _write_report(out: Path, echo: Callable[[str], None]) -> None:
    from shared.report.build import report_from_dir

    try:
        report_from_dir(out, out)
    except Exception as e:  # the results are written; a report failure must not lose them
        echo(f"report failed: {type(e).__name__}: {e}")
