"""Does the quickstart give one answer everywhere? Run it three ways and compare the report's verdicts.

Changing the torch thread count or the ATen CPU kernels changes floating-point rounding the way a
different CPU does. This runs `cotd run examples/quickstart.yaml` (fresh output folders) as

  default   2 jobs x 1 torch thread (what a 2-core machine runs);
  threads2  --jobs 1, 2 torch threads (other reduction order in every matmul);
  nosimd    ATEN_CPU_CAPABILITY=default (no AVX2/AVX-512 kernels),

records wall and CPU seconds of each, and compares the verdicts of each report.json: per student,
the best level, whether it is significantly better than its neighbours, the shape of the curve and
whether the best cell beats answer-only significantly.

    python bench/quickstart_robustness.py [--out runs/robustness] [--only default,nosimd]
    python bench/quickstart_robustness.py --compare DIR DIR ...   # reports of runs already made

Prints one line per run and `BENCH quickstart_robustness same_verdicts=...`; writes
bench/results/quickstart_robustness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default": ([], {}),
    "threads2": (["--jobs", "1"], {"OMP_NUM_THREADS": "2"}),
    "nosimd": ([], {"ATEN_CPU_CAPABILITY": "default"}),
}


def verdicts(report: dict) -> dict:
    """The report's verdicts per (dataset, student): what must not change from machine to machine."""
    out = {}
    for r in report["recommendations"]:
        lv = r["level"] or {}
        vs = r["vs_answer_only"] or {}
        out[f"{r['dataset']}/{r['student']}"] = {
            "best_level": lv.get("best_level"),
            "best_significant_vs_neighbours": lv.get("significant_vs_neighbours"),
            "pattern": lv.get("pattern"),
            "beats_answer_only": bool(vs.get("significant")) and (vs.get("diff") or 0) > 0,
        }
    return out


def accuracies(report: dict) -> dict:
    """Mean accuracy (over seeds) of every condition, in percent."""
    return {f"{c['student']} {c['label']}": round(100 * c["accuracy"], 1) for c in report["conditions"]}


def run(name: str, out: Path) -> dict:
    args, env = VARIANTS[name]
    cmd = [sys.executable, "-c", "from shared.cli import main; main()", "run", "examples/quickstart.yaml",
           "--out", str(out / name), *args]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=os.environ | env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu, 1), "dir": str(out / name)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs/robustness")
    ap.add_argument("--only", default=",".join(VARIANTS), help="Variants to run, comma-separated.")
    ap.add_argument("--compare", nargs="+", type=Path, help="Compare the reports in these run folders.")
    args = ap.parse_args()
    runs = {}
    if args.compare:
        runs = {d.name: {"dir": str(d)} for d in args.compare}
    else:
        for name in args.only.split(","):
            runs[name] = run(name, args.out)
    for name, r in runs.items():
        report = json.loads((Path(r["dir"]) / "report.json").read_text())
        r["verdicts"], r["accuracy"] = verdicts(report), accuracies(report)
        print(name, json.dumps(r), flush=True)
    first = next(iter(runs.values()))["verdicts"]
    same = all(r["verdicts"] == first for r in runs.values())
    (ROOT / "bench/results/quickstart_robustness.json").write_text(
        json.dumps({"same_verdicts": same, "runs": runs}, indent=2) + "\n"
    )
    print(f"BENCH quickstart_robustness same_verdicts={same} runs={','.join(runs)}")


if __name__ == "__main__":
    main()
