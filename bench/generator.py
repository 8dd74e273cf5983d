"""Benchmark: the generator's request throughput and adaptive concurrency against local servers.

Part 1, fixed latency. A minimal HTTP/1.1 server (a separate process) answers
`/v1/chat/completions` a fixed delay (default 50 ms) after each request arrives, so with a
concurrency of C the ideal throughput is C / latency. In this process, against that server, at each
concurrency (default 32 and 256) and with N requests each (default 20,000):

- `raw_aiohttp`: a bare aiohttp loop under a semaphore, no client library (the machine's ceiling);
- `hub_loop`: a bare asyncio loop of huggingface_hub `AsyncInferenceClient.chat_completion` calls
  under a semaphore (the hub's default httpx2 client, as a user would write it);
- `distilabel`: distilabel's OpenAI-compatible client (`distilabel.models.OpenAILLM`, `load()`, then
  `agenerate` per input under a semaphore; base_url the server, a dummy api_key);
- `generator`: our `generate_remote` (adaptive limiter, retries, journal flushed per item) on the
  same N questions.

Every client sends the same requests: the chat messages the generator builds for each question
(`build_messages`: system prompt, worked example, question; level 3, `cot`), 16 tokens at most,
temperature 0. Every client first sends C requests (imports, connection pool), then the measured N. Clients are
interleaved in a rotating order, best of `--repeats`. For each: requests/s, fraction of ideal, and
process CPU ms per request (`time.process_time`; the server is another process). Targets:
generator >= 0.95 x raw_aiohttp, >= 1.0 x distilabel, >= 1.0 x hub_loop, at every concurrency.

Part 2, an overloaded server. Another server process answers HTTP 429 (OpenAI's error body) when
a request would make more than K (6) requests in flight, and otherwise answers after
20 ms x max(1, in_flight / 4), so latency grows with load past a knee of 4. `generate_remote`
(default retry policy) runs with a fixed, non-adaptive limit at each concurrency of a sweep; the
best of those is the reference. Then `generate_remote` runs with its own adaptive limiter from the
teacher's default settings (nothing changed): its throughput / best fixed (target >= 0.9) and the
limit it settles at (the most frequent limit over the second half of the run, sampled every 10 ms).
Throughput is items over the whole wall time (the target's figure, retry tail included); the
steady rate over the middle 80 % of the items is reported beside it.

Part 3 (optional), a cProfile top-10 of the generator on a small fixed-latency run.

Ends with one line ``BENCH generator key=value ...`` and writes ``bench/results/generator.json``
(figures, peer versions, load average, met/missed per target).

    python bench/generator.py [--n 20000] [--concurrency 32,256] [--latency-ms 50] [--repeats 1]
        [--overload-n 4000] [--overload-sweep 1,2,3,4,5,6,8,12,16] [--profile-n 2000] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIENTS = ("raw_aiohttp", "hub_loop", "distilabel", "generator")
OVERLOAD_K = 6  # the overload server answers 429 above this many requests in flight
OVERLOAD_BASE_S = 0.020  # its latency: base x max(1, in_flight / knee)
OVERLOAD_KNEE = 4

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
_RATE = json.dumps(
    {
        "error": {
            "message": "Rate limit reached for requests. Please try again later.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
).encode()


def _response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


_OK = _response("200 OK", _REPLY)
_TOO_MANY = _response("429 Too Many Requests", _RATE)
_NOT_FOUND = _response("404 Not Found", b"{}")


# ------------------------------------------------------------------------------------------ server
class _Server(asyncio.Protocol):
    """HTTP/1.1 keep-alive. Fixed mode: each request is answered `latency_s` after it arrived.

    Overload mode (`max_inflight` set): a request that would make more than `max_inflight` requests
    in flight (over all connections) is answered 429 at once; the others after
    latency_s x max(1, in_flight / knee), in_flight counted when the request arrives.
    """

    inflight = 0  # shared by every connection of the process

    def __init__(self, latency_s: float, max_inflight: int | None, knee: int) -> None:
        self.latency_s, self.max_inflight, self.knee = latency_s, max_inflight, knee
        self.buf, self.transport = b"", None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = next(
                (int(h.split(":", 1)[1]) for h in head[1:] if h.lower().startswith("content-length:")), 0
            )
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            loop = asyncio.get_running_loop()
            if not head[0].startswith("POST /v1/chat/completions "):
                loop.call_later(self.latency_s, self._answer, _NOT_FOUND, False)
            elif self.max_inflight is None:
                loop.call_later(self.latency_s, self._answer, _OK, False)
            elif _Server.inflight >= self.max_inflight:
                self.transport.write(_TOO_MANY)
            else:
                _Server.inflight += 1
                delay = self.latency_s * max(1.0, _Server.inflight / self.knee)
                loop.call_later(delay, self._answer, _OK, True)

    def _answer(self, reply: bytes, counted: bool) -> None:
        if counted:
            _Server.inflight -= 1
        if not self.transport.is_closing():
            self.transport.write(reply)


def _serve(port: int, latency_s: float, max_inflight: int | None, knee: int, ready) -> None:
    """The server process (answering costs it a few microseconds per request)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(
            lambda: _Server(latency_s, max_inflight, knee), "127.0.0.1", port, backlog=4096
        )
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _start_server(latency_s: float, max_inflight: int | None = None, knee: int = 1) -> tuple[mp.Process, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = mp.Event()
    srv = mp.Process(target=_serve, args=(port, latency_s, max_inflight, knee, ready), daemon=True)
    srv.start()
    if not ready.wait(30):
        raise SystemExit("bench: the server did not start")
    return srv, f"http://127.0.0.1:{port}/v1"


# ----------------------------------------------------------------------------------------- clients
def _messages(i: int) -> list[dict[str, str]]:
    """The chat messages the generator sends for question i (warm-up questions for negative i)."""
    from services.generator.prompts import build_messages

    q = (
        _questions(1, "Bench question", first=i)
        if i >= 0
        else _questions(1, "Warm-up question", first=-1 - i)
    )
    return build_messages(q[0], 3, "cot")


async def _measure(one, n: int, concurrency: int) -> tuple[float, float]:
    """Warm up with `concurrency` calls of one(i) (negative i), then time n calls: (wall s, CPU s)."""
    await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def _raw_aiohttp(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Raw aiohttp, no client library: what this machine's loop and loopback allow at all."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(i: int) -> None:
            body = {"model": "m", "messages": _messages(i), "max_tokens": 16, "temperature": 0.0}
            async with sem, session.post(f"{url}/chat/completions", json=body) as r:
                reply = json.loads(await r.read())
                if r.status != 200 or not reply["choices"]:
                    raise SystemExit(f"bench: raw_aiohttp got HTTP {r.status}")

        return await _measure(one, n, concurrency)


async def _hub_loop(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """A bare loop of `AsyncInferenceClient.chat_completion` (the hub's default httpx2 client)."""
    from huggingface_hub import AsyncInferenceClient

    client = AsyncInferenceClient(base_url=url, api_key="EMPTY")
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            out = await client.chat_completion(_messages(i), model="m", max_tokens=16, temperature=0.0)
            assert out.choices[0].message.content

    try:
        return await _measure(one, n, concurrency)
    finally:
        await client.close()


async def _distilabel(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """distilabel's OpenAI-compatible LLM: `load()`, then `agenerate` per input under a semaphore."""
    from distilabel.models import OpenAILLM

    llm = OpenAILLM(model="m", base_url=url, api_key="EMPTY")
    llm.load()  # inside the loop: the openai client binds its connection pool to it
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            out = await llm.agenerate(input=_messages(i), max_new_tokens=16, temperature=0.0)
            assert out["generations"][0]

    try:
        return await _measure(one, n, concurrency)
    finally:
        await llm._aclient.close()


def _spec(url: str, concurrency: int | None = None):
    from shared.specs import CotSetSpec, DatasetRef, TeacherSpec

    extra = {} if concurrency is None else {"concurrency": concurrency}  # None: the teacher's default
    t = TeacherSpec(name="bench", kind="openai", model="m", base_url=url, max_new_tokens=16, **extra)
    return CotSetSpec(dataset=DatasetRef(name="svamp"), teacher=t, level=3, format="cot", prompt_version="p1")


def _questions(n: int, prefix: str = "Bench question", first: int = 0):
    from shared.datasets.base import TaskType, make_question

    return [
        make_question("svamp", f"{prefix} {i}: 3 + 4?", "7", TaskType.NUMBER) for i in range(first, first + n)
    ]


async def _generator(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """`generate_remote` on n questions; warmed up like the others (one client for both runs)."""
    from services.generator.teachers.remote import generate_remote, make_client

    spec = _spec(url, concurrency)
    qs, warm = _questions(n), _questions(concurrency, "Warm-up question")
    client = make_client(spec.teacher)
    try:
        with tempfile.TemporaryDirectory() as work:
            await generate_remote(spec, warm, Path(work) / "warm", client=client)
            wall, cpu = time.perf_counter(), time.process_time()
            recs = await generate_remote(spec, qs, Path(work), client=client)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await client.close()
    failed = sum(r.error is not None for r in recs)
    if failed:
        raise SystemExit(f"bench: generator: {failed} requests failed")
    return wall, cpu


_RUNNERS = {
    "raw_aiohttp": _raw_aiohttp,
    "hub_loop": _hub_loop,
    "distilabel": _distilabel,
    "generator": _generator,
}


def _fixed_latency(args, concurrencies: list[int]) -> dict:
    latency = args.latency_ms / 1000
    srv, url = _start_server(latency)
    out: dict = {}
    try:
        for c in concurrencies:
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in CLIENTS}
            for r in range(args.repeats):  # interleaved, rotating order: the machine may be shared
                for k in CLIENTS[r % len(CLIENTS) :] + CLIENTS[: r % len(CLIENTS)]:
                    runs[k].append(asyncio.run(_RUNNERS[k](url, args.n, c)))
                    print(f"  c={c} {k}: {args.n / runs[k][-1][0]:.0f} req/s", file=sys.stderr, flush=True)
            ideal = c / latency
            row: dict = {"ideal_rps": round(ideal, 1)}
            for k in CLIENTS:
                wall, cpu = min(runs[k])  # the fastest run, with its own CPU time
                row[k] = {
                    "rps": round(args.n / wall, 1),
                    "of_ideal": round(args.n / wall / ideal, 3),
                    "cpu_ms_per_req": round(1000 * cpu / args.n, 3),
                    "all_rps": [round(args.n / w, 1) for w, _ in runs[k]],
                }
            g = row["generator"]["rps"]
            row["ratios"] = {f"generator_vs_{k}": round(g / row[k]["rps"], 3) for k in CLIENTS[:3]}
            out[str(c)] = row
    finally:
        srv.terminate()
        srv.join(5)
    return out


# ---------------------------------------------------------------------------------------- overload
async def _overload_run(url: str, n: int, fixed: int | None) -> dict:
    """`generate_remote` against the overload server: a fixed limit, or the default adaptive one."""
    from services.generator.teachers.concurrency import AdaptiveLimiter
    from services.generator.teachers.remote import RunStats, generate_remote

    class Fixed(AdaptiveLimiter):
        """The same limiter with its adaptation switched off."""

        def succeeded(self) -> None:
            pass

        def overloaded(self, epoch: int) -> None:
            pass

    spec = _spec(url, fixed)  # adaptive: the teacher's default concurrency and retries
    limiter = Fixed(fixed, "bench") if fixed else AdaptiveLimiter(spec.teacher.concurrency, "bench")
    stats, samples = RunStats(), []

    async def sample() -> None:
        while True:
            samples.append(limiter.limit)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    done: list[float] = []  # when each item was journaled (`check` is called right after)
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        recs = await generate_remote(
            spec,
            _questions(n),
            Path(work),
            stats=stats,
            check=lambda: done.append(time.perf_counter()),
            limiter=limiter,
        )
        wall = time.perf_counter() - start
    sampler.cancel()
    ok = sum(r.error is None for r in recs)
    lo, hi = done[n // 10], done[n - 1 - n // 10]  # the middle 80 % of the items: no start, no retry tail
    res = {
        "start_limit": spec.teacher.concurrency,
        "rps": round(ok / wall, 1),
        "steady_rps": round((n - 1 - 2 * (n // 10)) / (hi - lo), 1) if hi > lo else None,
        "ok": ok,
        "failed": n - ok,
        "attempts_per_item": round(stats.attempts / n, 3),
        "wall_s": round(wall, 2),
    }
    if not fixed:
        late = samples[len(samples) // 2 :] or [limiter.limit]
        res |= {
            "settled_limit": Counter(late).most_common(1)[0][0],
            "mean_limit_2nd_half": round(statistics.fmean(late), 2),
            "limit_share_2nd_half": {
                str(k): round(v / len(late), 3) for k, v in sorted(Counter(late).items())
            },
            "final_limit": limiter.limit,
            "min_limit": stats.min_limit,
        }
    return res


def _overload(args) -> dict:
    srv, url = _start_server(OVERLOAD_BASE_S, OVERLOAD_K, OVERLOAD_KNEE)
    try:
        sweep = {}
        for c in args.overload_sweep:
            sweep[str(c)] = asyncio.run(_overload_run(url, args.overload_n, c))
            print(f"  overload fixed {c}: {sweep[str(c)]['rps']} req/s", file=sys.stderr, flush=True)
        adaptive = asyncio.run(_overload_run(url, args.overload_n, None))
        print(f"  overload adaptive: {adaptive['rps']} req/s", file=sys.stderr, flush=True)
    finally:
        srv.terminate()
        srv.join(5)
    best = max(sweep, key=lambda c: sweep[c]["rps"])
    return {
        "server": {
            "max_in_flight": OVERLOAD_K,
            "latency": f"{OVERLOAD_BASE_S * 1000:g} ms x max(1, in_flight/{OVERLOAD_KNEE}); 429 above {OVERLOAD_K}",
        },
        "n": args.overload_n,
        "fixed": sweep,
        "best_fixed_concurrency": int(best),
        "best_fixed_rps": sweep[best]["rps"],
        "adaptive": adaptive,
        "adaptive_vs_best_fixed": round(adaptive["rps"] / sweep[best]["rps"], 3),
        "adaptive_vs_best_fixed_steady": round(
            adaptive["steady_rps"] / max(r["steady_rps"] or 0 for r in sweep.values()), 3
        ),
    }


# ----------------------------------------------------------------------------------------- profile
def _profile(args) -> dict:
    """cProfile of the generator alone on a small fixed-latency run: the top 10 by own time."""
    srv, url = _start_server(args.latency_ms / 1000)
    prof = cProfile.Profile()
    try:
        prof.enable()
        wall, _ = asyncio.run(_generator(url, args.profile_n, args.profile_concurrency))
        prof.disable()
    finally:
        srv.terminate()
        srv.join(5)
    st = pstats.Stats(prof, stream=io.StringIO())
    total, reqs = st.total_tt, args.profile_n + args.profile_concurrency  # with the warm-up requests

    def row(key, value) -> dict:
        (f, line, name), (_, nc, tt, ct, _) = key, value
        where = os.path.relpath(f, ROOT) if f.startswith(str(ROOT)) else Path(f).name
        return {
            "function": f"{where}:{line}({name})",
            "calls": nc,
            "own_ms_per_req": round(1000 * tt / reqs, 4),
            "own_share": round(tt / total, 3),
            "cum_ms_per_req": round(1000 * ct / reqs, 4),
        }

    by_own = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]
    ours = [kv for kv in st.stats.items() if kv[0][0].startswith(str(ROOT)) and "/bench/" not in kv[0][0]]
    by_cum = sorted(ours, key=lambda kv: kv[1][3], reverse=True)[:10]
    return {
        "n": args.profile_n,
        "concurrency": args.profile_concurrency,
        "profiled_cpu_ms_per_req": round(1000 * total / reqs, 3),
        "note": "under cProfile (which inflates every call): shares matter, not absolute times; "
        "per request = over the n measured and the warm-up requests",
        "rps_under_profiler": round(args.profile_n / wall, 1),
        "top10_own_time": [row(*kv) for kv in by_own],
        "top10_cotd_cumulative": [row(*kv) for kv in by_cum],
    }


# -------------------------------------------------------------------------------------------- main
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("aiohttp", "huggingface_hub", "httpx2", "distilabel", "openai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--n", type=int, default=20000, help="Measured requests per client and concurrency (0: skip part 1)."
    )
    ap.add_argument("--concurrency", type=_ints, default=[32, 256], help="Comma-separated, e.g. 32,256.")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="The fixed-latency server's delay.")
    ap.add_argument("--repeats", type=int, default=1, help="Best of R interleaved runs per client.")
    ap.add_argument("--overload-n", type=int, default=4000, help="Items per overload run (0: skip part 2).")
    ap.add_argument("--overload-sweep", type=_ints, default=[1, 2, 3, 4, 5, 6, 8, 12, 16])
    ap.add_argument("--profile-n", type=int, default=2000, help="Requests in the profiled run (0: skip).")
    ap.add_argument("--profile-concurrency", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "generator.json")
    args = ap.parse_args()

    load_start, t0 = os.getloadavg(), time.perf_counter()
    res: dict = {
        "versions": _versions(),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load_start]},
        "settings": {
            "n": args.n,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "repeats": args.repeats,
        },
        "fixed_latency": _fixed_latency(args, args.concurrency) if args.n else {},
    }
    if args.overload_n:
        res["overload"] = _overload(args)
    if args.profile_n:
        res["generator_profile"] = _profile(args)
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["duration_s"] = round(time.perf_counter() - t0, 1)

    targets = []
    for c, row in res["fixed_latency"].items():
        for peer, need in (("raw_aiohttp", 0.95), ("distilabel", 1.0), ("hub_loop", 1.0)):
            got = row["ratios"][f"generator_vs_{peer}"]
            targets.append(
                {"target": f"c{c}: generator >= {need} x {peer}", "value": got, "met": got >= need}
            )
    if "overload" in res:
        got = res["overload"]["adaptive_vs_best_fixed"]
        targets.append({"target": "overload: adaptive >= 0.9 x best fixed", "value": got, "met": got >= 0.9})
    res["targets"] = targets

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")

    line = {"n": args.n, "latency_ms": args.latency_ms}
    for c, row in res["fixed_latency"].items():
        line |= {f"c{c}_{k}_rps": row[k]["rps"] for k in CLIENTS}
        line |= {f"c{c}_{k}_cpu_ms": row[k]["cpu_ms_per_req"] for k in CLIENTS}
        line |= {f"c{c}_generator_of_ideal": row["generator"]["of_ideal"]}
        line |= {f"c{c}_{k}": v for k, v in row["ratios"].items()}
    if "overload" in res:
        o = res["overload"]
        line |= {
            "overload_best_fixed": o["best_fixed_concurrency"],
            "overload_best_fixed_rps": o["best_fixed_rps"],
            "overload_adaptive_rps": o["adaptive"]["rps"],
            "overload_adaptive_vs_best": o["adaptive_vs_best_fixed"],
            "overload_settled_limit": o["adaptive"]["settled_limit"],
        }
    line |= {
        "targets_met": f"{sum(t['met'] for t in targets)}/{len(targets)}",
        "load1": res["machine"]["loadavg_start"][0],
    }
    print("BENCH generator " + " ".join(f"{k}={v}" for k, v in line.items()))


if __name__ == "__main__":
    main()
