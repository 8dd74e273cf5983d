"""Benchmark: the generator's request throughput against a server with a fixed latency.

A minimal HTTP/1.1 server (a separate process) answers `/v1/chat/completions` a fixed delay (50 ms)
after each request arrives. With a concurrency of C the ideal throughput is C / latency requests per second. We
measure, in the same process and against the same server:

- `generator`: `generate_remote` (adaptive limiter, retries, journal flushed per item) on N questions;
- `baseline`: a bare asyncio loop of `AsyncInferenceClient.chat_completion` calls under a semaphore
  (the hub's default httpx2 client);
- `raw_aiohttp`: the same loop with aiohttp alone and no hub, the ceiling of this machine's event
  loop and loopback.

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


_REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
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
).encode()
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(_REPLY), _REPLY)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class _FixedLatency(asyncio.Protocol):
    """HTTP/1.1 keep-alive: each complete request is answered `latency_s` after it arrived."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s, self.buf, self.transport = latency_s, b"", None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = next((int(h.split(":", 1)[1]) for h in head[1:] if h.lower().startswith("content-length:")), 0)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            ok = head[0].startswith("POST /v1/chat/completions ")
            asyncio.get_running_loop().call_later(self.latency_s, self._answer, _OK if ok else _NOT_FOUND)

    def _answer(self, reply: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply)


def _serve(port: int, latency_s: float, ready) -> None:
    """The fixed-latency server (a separate process; answering costs it a few microseconds)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: _FixedLatency(latency_s), "127.0.0.1", port, backlog=1024)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _floor(url: str, n: int, concurrency: int) -> float:
    """Raw aiohttp, no hub: what this machine's loop and loopback allow at all."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 16}
            async with sem, session.post(f"{url}/chat/completions", json=body) as r:
                json.loads(await r.read())

        await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start


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
        base_walls, gen_walls, floor_walls = [], [], []
        for _ in range(args.repeats):  # interleaved, best of R: the machine is shared
            base_walls.append(asyncio.run(_baseline(url, args.n, args.concurrency)))
            gen_walls.append(_generator(url, args.n, args.concurrency))
            floor_walls.append(asyncio.run(_floor(url, args.n, args.concurrency)))
    finally:
        srv.terminate()
        srv.join(5)
    gen_rps, base_rps, floor_rps = (args.n / min(w) for w in (gen_walls, base_walls, floor_walls))
    res = {
        "n": args.n,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "ideal_rps": round(ideal, 1),
        "generator_rps": round(gen_rps, 1),
        "baseline_rps": round(base_rps, 1),
        "generator_of_ideal": round(gen_rps / ideal, 3),
        "baseline_of_ideal": round(base_rps / ideal, 3),
        "raw_aiohttp_of_ideal": round(floor_rps / ideal, 3),
        "generator_vs_baseline": round(gen_rps / base_rps, 3),
    }
    out = ROOT / "bench" / "results" / "generator.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("BENCH generator " + " ".join(f"{k}={v}" for k, v in res.items()))


if __name__ == "__main__":
    main()
