"""Benchmark: the generator's request throughput against a server with a fixed latency.

A local aiohttp server (a separate process) answers `/v1/chat/completions` after a fixed delay
(50 ms). With a concurrency of C the ideal throughput is C / latency requests per second. We
measure, in the same process and against the same server:

- `generator`: `generate_remote` (adaptive limiter, retries, journal flushed per item) on N questions;
- `baseline`: a bare asyncio loop of `AsyncInferenceClient.chat_completion` calls under a semaphore.

Each is reported as a fraction of ideal. Ends with one line ``BENCH generator key=value ...`` and
writes the same figures to ``bench/results/generator.json``.

    python bench/generator.py [--n 640] [--concurrency 32] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _serve(port: int, latency_s: float, ready) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(latency_s)
        return web.json_response(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "m"),
                "system_fingerprint": "bench",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "3 + 4 = 7. The answer is 7"},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
            }
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _baseline(url: str, n: int, concurrency: int) -> float:
    from huggingface_hub import AsyncInferenceClient

    client = AsyncInferenceClient(base_url=url, api_key="EMPTY")
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await client.chat_completion(
                [{"role": "user", "content": f"q{i}"}], model="m", max_tokens=16, temperature=0.0
            )

    await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))  # open the whole connection pool
    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    await client.close()
    return wall


def _generator(url: str, n: int, concurrency: int) -> float:
    from services.generator.teachers.remote import generate_remote
    from shared.datasets.base import TaskType, make_question
    from shared.specs import CotSetSpec, DatasetRef, TeacherSpec

    qs = [make_question("svamp", f"Bench question {i}: 3 + 4?", "7", TaskType.NUMBER) for i in range(n)]
    t = TeacherSpec(
        name="bench", kind="openai", model="m", base_url=url, concurrency=concurrency, max_new_tokens=16
    )
    spec = CotSetSpec(dataset=DatasetRef(name="svamp"), teacher=t, level=3, format="cot", prompt_version="p1")
    with tempfile.TemporaryDirectory() as work:
        asyncio.run(generate_remote(spec, qs[:concurrency], Path(work) / "warm"))  # imports, connections
        start = time.perf_counter()
        recs = asyncio.run(generate_remote(spec, qs, Path(work)))
        wall = time.perf_counter() - start
    failed = sum(r.error is not None for r in recs)
    if failed:
        raise SystemExit(f"bench: {failed} requests failed")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--repeats", type=int, default=2, help="Best of R runs for each side.")
    args = ap.parse_args()
    latency = args.latency_ms / 1000
    port = _free_port()
    ready = mp.Event()
    srv = mp.Process(target=_serve, args=(port, latency, ready), daemon=True)
    srv.start()
    ready.wait(30)
    url = f"http://127.0.0.1:{port}/v1"
    ideal = args.concurrency / latency
    try:
        base_walls, gen_walls = [], []
        for _ in range(args.repeats):  # interleaved, best of R: the machine is shared
            base_walls.append(asyncio.run(_baseline(url, args.n, args.concurrency)))
            gen_walls.append(_generator(url, args.n, args.concurrency))
    finally:
        srv.terminate()
        srv.join(5)
    gen_rps, base_rps = args.n / min(gen_walls), args.n / min(base_walls)
    res = {
        "n": args.n,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "ideal_rps": round(ideal, 1),
        "generator_rps": round(gen_rps, 1),
        "baseline_rps": round(base_rps, 1),
        "generator_of_ideal": round(gen_rps / ideal, 3),
        "baseline_of_ideal": round(base_rps / ideal, 3),
        "generator_vs_baseline": round(gen_rps / base_rps, 3),
    }
    out = ROOT / "bench" / "results" / "generator.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("BENCH generator " + " ".join(f"{k}={v}" for k, v in res.items()))


if __name__ == "__main__":
    main()
