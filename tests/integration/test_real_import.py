"""`cotd model import-gguf` on the real SmolLM2-135M-Instruct GGUF file, and `.gguf` students in grids."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
import torch
from click.testing import CliRunner

from shared.cli import cli
from shared.keys import file_sha256

pytestmark = [pytest.mark.slow]


def test_converted_model_matches_the_gguf_model(smollm2_gguf, smollm2, tmp_path):
    """The safetensors copy, moved elsewhere, gives the GGUF model's logits, tokenizer and template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((smollm2 / "cotd_model.json").read_text())
    assert info["gguf_sha256"] == file_sha256(smollm2_gguf)
    assert info["architecture"] == "LlamaForCausalLM" and info["parameters"] > 100_000_000
    manifest = json.loads((smollm2 / "manifest.json").read_text())
    assert manifest["gguf_sha256"] == info["gguf_sha256"]
    moved = tmp_path / "elsewhere"
    shutil.copytree(smollm2, moved)
    config = json.loads((moved / "config.json").read_text())
    assert config["use_cache"] is True and "quantization_config" not in config
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in moved.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # weights are not written 0600 beside 0644 files

    tok = AutoTokenizer.from_pretrained(moved)
    model = AutoModelForCausalLM.from_pretrained(moved, dtype=torch.float32).eval()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n") and tok.eos_token == "<|im_end|>"
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    ref = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name).eval()
    ref_tok = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    assert ref_tok(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    with torch.inference_mode():
        got, want = model(ids).logits, ref(ids).logits
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


def test_store_import_is_keyed_by_sha256_and_done_once(smollm2_gguf, smollm2, tmp_path):
    """A second import of the same bytes (under another name) finds the published model."""
    from services.trainer.gguf_import import gguf_model_key, import_into_store
    from shared.artifacts import LocalStore
    from tests.realmodel import store_root

    store = LocalStore(store_root())
    renamed = tmp_path / "my-copy.gguf"
    shutil.copy(smollm2_gguf, renamed)
    before = store.manifest("models", gguf_model_key(file_sha256(smollm2_gguf)))
    key = import_into_store(renamed, store)
    assert key == gguf_model_key(file_sha256(renamed)) and store.fetch("models", key) == smollm2
    assert store.manifest("models", key)["published_at"] == before["published_at"]


def test_import_gguf_refuses_bad_input(tmp_path):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not GGUF")
    runner = CliRunner()
    res = runner.invoke(cli, ["model", "import-gguf", str(bad), str(tmp_path / "out")])
    assert (
        res.exit_code == 1 and "not-a-model.gguf" in res.output and len(res.output.strip().splitlines()) == 1
    )
    assert not (tmp_path / "out").exists()
    res = runner.invoke(cli, ["model", "import-gguf", str(tmp_path / "absent.gguf"), str(tmp_path / "o")])
    assert res.exit_code == 1 and "no such GGUF file" in res.output
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    res = runner.invoke(cli, ["model", "import-gguf", str(bad), str(full)])
    assert res.exit_code == 1 and "not empty" in res.output and (full / "x").read_text() == "keep me"


def test_grid_gguf_student_is_keyed_by_file_content(tmp_path):
    """A grid's `.gguf` model is a path relative to the grid; the key hashes its bytes, not its name."""
    from shared.grid import GridError, expand, load_grid

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.gguf").write_bytes(b"same bytes")
    (data / "b.gguf").write_bytes(b"same bytes")
    (data / "c.gguf").write_bytes(b"other bytes")

    def grid(model: str) -> str:
        path = tmp_path / f"grid-{model.replace('/', '_')}.yaml"
        path.write_text(
            "name: g\ndatasets: [{name: arith}]\nteachers: [{name: p, kind: procedural}]\nlevels: [1]\n"
            f"students: [{{name: s, model: {model}}}]\n"
        )
        return str(path)

    keys = {
        m: expand(load_grid(grid(m)))[0].checkpoint.key for m in ("data/a.gguf", "data/b.gguf", "data/c.gguf")
    }
    assert keys["data/a.gguf"] == keys["data/b.gguf"] != keys["data/c.gguf"]
    assert expand(load_grid(grid("data/a.gguf")))[0].checkpoint.student.model == str(data / "a.gguf")
    with pytest.raises(GridError, match=r"students\[0\]\.model: no such GGUF file"):
        load_grid(grid("data/missing.gguf"))
