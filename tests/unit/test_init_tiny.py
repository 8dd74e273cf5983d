"""`cotd model init-tiny`: a tokenizer and a small Llama built offline, loadable with Auto* classes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from shared.cli import cli


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_init_tiny_default_corpus_loads_with_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "tiny"
    res = CliRunner().invoke(cli, ["model", "init-tiny", str(out), "--size", "xs"])
    assert res.exit_code == 0, res.output
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tok)
    n_params = sum(p.numel() for p in model.parameters())
    assert 20_000 < n_params < 400_000
    pieces = tok.tokenize("Ann has 14 apples and 203 pens.")
    digits = [p for p in pieces if any(ch.isdigit() for ch in p)]
    assert digits == ["1", "4", "2", "0", "3"]  # one digit per token
    assert tok.decode(tok("Ann has 14 apples.")["input_ids"]) == "Ann has 14 apples."
    assert tok.chat_template and tok.eos_token and tok.pad_token
    assert (out / "model.safetensors").exists()


def test_init_tiny_sizes_differ(tmp_path):
    from transformers import AutoModelForCausalLM

    from services.trainer.tiny import init_tiny

    sizes = {}
    for size in ("xs", "s"):
        path = init_tiny(tmp_path / size, size=size)
        sizes[size] = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())
    assert sizes["xs"] < sizes["s"]
    assert 120_000 < sizes["s"] < 200_000  # the ~156k-parameter student of the design notes


def test_init_tiny_on_a_dataset_corpus(tmp_path, shared_data):
    from transformers import AutoTokenizer

    corpus = shared_data / "paper-cot" / "SVAMP_ChatGPT_level1_ranked.json"
    out = tmp_path / "svamp-tiny"
    res = CliRunner().invoke(cli, ["model", "init-tiny", str(out), "--corpus", str(corpus), "--size", "xs"])
    assert res.exit_code == 0, res.output
    tok = AutoTokenizer.from_pretrained(out)
    # words of that corpus are learned as whole tokens
    assert "Ġbananas" in tok.get_vocab() or "Ġgroups" in tok.get_vocab()


def test_init_tiny_rejects_a_bad_corpus_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    res = CliRunner().invoke(cli, ["model", "init-tiny", str(tmp_path / "m"), "--corpus", str(bad)])
    assert res.exit_code != 0
    assert "bad.json" in res.output and "\n" not in res.output.strip()
