"""Orchestration overhead: submit a 1,000-cell grid and run it with no-op stages.

Real Redis (db 11, flushed), a moto S3 server and three real `cotd worker`s in `COTD_STAGE_MODE=noop`
(each stage reads its input artifact and publishes a tiny one, atomically). What is measured is
everything but the ML: grid expansion and de-duplication, Redis state, Celery queues, S3 I/O.

Figures: submit time (expand + existence check + Redis state + enqueue), and the per-cell overhead
= wall time from submit to "done" / cells. Targets: submit < 10 s, overhead < 1 s per cell.
Usage: python bench/orchestration.py [--cells-per-dataset 200] [--datasets 5] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.services import (  # noqa: E402
    Worker,
    client_settings,
    cotd_env,
    moto_server,
    scratch_dir,
    wait_for,
)

REDIS_URL = "redis://127.0.0.1:6379/11"
BUCKET = "cotd-bench"
SUBMIT_TARGET_S = 10.0
OVERHEAD_TARGET_S = 1.0


def bench_grid(datasets: int, students: int, seeds: int) -> dict:
    """datasets x (procedural: 6 levels x 4 formats + answer-only) x students x seeds cells."""
    return {
        "name": "bench-orchestration",
        "datasets": [{"name": "arith", "train_size": 100, "test_size": 20, "arith": {"seed": i}} for i in range(datasets)],
        "teachers": [{"name": "proc", "kind": "procedural"}, {"name": "base", "kind": "answer-only"}],
        "levels": [1, 2, 3, 4, 5, 6],
        "formats": ["cot", "subquestion", "rar", "symbolic"],
        "students": [{"name": f"s{i}", "model": "tiny:xs", "training": {"lr": 0.001 * (i + 1)}} for i in range(students)],
        "training": {"max_steps": 1},
        "seeds": list(range(seeds)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=5)
    ap.add_argument("--students", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4, help="Threads per worker.")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()

    import redis

    from shared.grid import parse_grid
    from shared.orchestration.context import Context
    from shared.orchestration.state import GridState
    from shared.orchestration.submit import submit_grid

    r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        r.ping()
    except redis.RedisError as e:
        print(f"Redis is not answering at {REDIS_URL}: {e}", file=sys.stderr)
        return 2
    r.flushdb()
    grid = parse_grid(bench_grid(args.datasets, args.students, args.seeds))

    with scratch_dir("cotd-bench-") as root, moto_server(root) as endpoint:
        env = cotd_env(REDIS_URL, endpoint, BUCKET, root / "worker-cache", COTD_STAGE_MODE="noop")
        workers = [Worker(role, env, root, args.concurrency) for role in ("generator", "trainer", "evaluator")]
        try:
            for w in workers:
                w.start()
            ctx = Context(client_settings(REDIS_URL, endpoint, BUCKET, root / "client-cache"))
            ctx.store.ensure_bucket()
            t0 = time.perf_counter()
            res = submit_grid(grid, ctx)
            submit_s = time.perf_counter() - t0
            gs = GridState(ctx.redis, res.grid_id)
            wait_for(lambda: gs.status() in ("done", "failed"), args.timeout, "the grid", interval=0.25)
            wall_s = time.perf_counter() - t0
            status = gs.status()
            stages = gs.stage_counts()
            tasks = sum(v.get("computed", 0) for v in stages.values())
            t1 = time.perf_counter()
            res2 = submit_grid(grid, ctx)
            resubmit_s = time.perf_counter() - t1
        finally:
            for w in workers:
                w.stop()

    cells = res.cells
    fig = {
        "cells": cells,
        "tasks": tasks,
        "generate": stages.get("generate", {}).get("total", 0),
        "train": stages.get("train", {}).get("total", 0),
        "evaluate": stages.get("evaluate", {}).get("total", 0),
        "status": status,
        "submit_s": round(submit_s, 3),
        "wall_s": round(wall_s, 2),
        "overhead_per_cell_s": round(wall_s / cells, 4),
        "overhead_per_task_s": round(wall_s / max(1, tasks), 4),
        "resubmit_s": round(resubmit_s, 3),
        "resubmit_cached_cells": res2.cached_cells,
        "worker_concurrency": args.concurrency,
        "submit_target_s": SUBMIT_TARGET_S,
        "overhead_target_s": OVERHEAD_TARGET_S,
        "submit_ok": submit_s < SUBMIT_TARGET_S,
        "overhead_ok": wall_s / cells < OVERHEAD_TARGET_S,
    }
    out = REPO / "bench" / "results" / "orchestration.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fig, indent=2) + "\n")
    print(
        f"{cells} cells ({fig['generate']} CoT sets, {fig['train']} checkpoints, {fig['evaluate']} evaluations): "
        f"submit {submit_s:.2f}s, done after {wall_s:.1f}s, resubmit {resubmit_s:.2f}s ({res2.cached_cells} cached)"
    )
    print("BENCH orchestration " + " ".join(f"{k}={v}" for k, v in fig.items() if not k.endswith("_target_s")))
    return 0 if status == "done" and fig["submit_ok"] and fig["overhead_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
