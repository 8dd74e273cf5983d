"""LoRA: the adapter is saved with its base reference, reloads, and merges to the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from services.trainer.recipe import train_sft
from shared.config import TrainingConfig
from tests.unit.tiny_student import tiny_student

torch.set_num_threads(1)

PAIRS = [
    (f"What is {a} * {b}?", f"{a} * {b} = {a * b}. The answer is {a * b}")
    for a in range(1, 9)
    for b in range(2, 5)
]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_student(tmp_path_factory.mktemp("tiny"), PAIRS)


def cfg(**kw) -> TrainingConfig:
    return TrainingConfig(
        **(
            {
                "method": "lora",
                "lr": 5e-3,
                "max_steps": 4,
                "global_batch_size": 8,
                "micro_batch_size": 4,
                "lora_r": 4,
            }
            | kw
        )
    )


def logits(model, tok) -> torch.Tensor:
    ids = tok("Q: What is 3 * 4?\nA: 3 * 4 =", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def test_adapter_saved_reloaded_and_merged_gives_same_logits(base: Path, tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.evaluator.evaluate import load_for_inference
    from services.trainer.models import merge_adapter

    s = train_sft(str(base), PAIRS, tmp_path / "out", tmp_path / "work", cfg(), seed=100)
    out = tmp_path / "out"
    assert (
        s["complete"]
        and (out / "adapter_model.safetensors").exists()
        and not (out / "model.safetensors").exists()
    )
    # the base as the user gave it (here a path), not a path the trainer made up
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    tok = AutoTokenizer.from_pretrained(out)
    peft_model = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    adapted = logits(peft_model, tok)
    base_logits = logits(AutoModelForCausalLM.from_pretrained(base).eval(), tok)
    assert not torch.allclose(adapted, base_logits, atol=1e-4)  # the adapter learned something
    ev_model, _ = load_for_inference(out, torch.device("cpu"))
    torch.testing.assert_close(logits(ev_model, tok), adapted)
    merge_adapter(out)
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(logits(merged, tok), adapted, atol=1e-4, rtol=1e-4)


def test_only_adapters_train_and_targets_are_settable(base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    s = train_sft(
        str(base),
        PAIRS,
        tmp_path / "out",
        tmp_path / "work",
        cfg(max_steps=2, lora_target_modules=["q_proj", "v_proj"], lora_alpha=8, lora_dropout=0.0),
        seed=1,
    )
    assert s["complete"]
    conf = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert (
        sorted(conf["target_modules"]) == ["q_proj", "v_proj"] and conf["r"] == 4 and conf["lora_alpha"] == 8
    )
    keys = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert keys and all("lora_" in k and ("q_proj" in k or "v_proj" in k) for k in keys)


def test_merge_lora_option_saves_a_full_model(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    train_sft(
        str(base), PAIRS, tmp_path / "out", tmp_path / "work", cfg(max_steps=1, merge_lora=True), seed=1
    )
    assert (tmp_path / "out" / "model.safetensors").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_bad_target_modules_are_a_clear_error(base: Path, tmp_path: Path) -> None:
    from services.trainer.loop import TrainingError

    with pytest.raises(TrainingError, match="target modules"):
        train_sft(
            str(base),
            PAIRS,
            tmp_path / "out",
            tmp_path / "work",
            cfg(lora_target_modules=["nope_proj"]),
            seed=1,
        )


def test_adapter_names_a_store_base_by_its_key_and_loads_on_another_host(
    base: Path, tmp_path: Path, monkeypatch
) -> None:
    """An adapter of a tiny or converted student names `models/<key>`, never the trainer's cache path;
    another host (the trainer's copy gone) loads the base from its own artifact store."""
    import shutil

    from services.evaluator.evaluate import load_for_inference
    from services.trainer.models import read_info
    from shared.artifacts import LocalStore
    from shared.settings import get_settings

    key = "0123456789abcdef01234567"
    cache_copy = tmp_path / "cache-trainer" / "cotd" / "models" / key
    shutil.copytree(base, cache_copy)
    out = tmp_path / "out"
    s = train_sft(
        str(cache_copy), PAIRS, out, tmp_path / "work", cfg(max_steps=1), seed=1, base_ref=f"models/{key}"
    )
    assert s["complete"]
    conf = json.loads((out / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == f"models/{key}"
    info = read_info(out)
    assert info is not None and info.base_model == f"models/{key}" and info.base_path is None  # no host path
    assert str(tmp_path) not in (out / "cotd_checkpoint.json").read_text()
    same_host, _ = load_for_inference(out, torch.device("cpu"), base_path=str(cache_copy))  # the trainer's copy

    shutil.rmtree(cache_copy)  # another host: no trainer cache, but the shared store
    LocalStore(tmp_path / "store").publish("models", key, base, {"tiny": "xs"})
    monkeypatch.setenv("COTD_STORE_DIR", str(tmp_path / "store"))
    get_settings.cache_clear()
    try:
        other_host, tok = load_for_inference(out, torch.device("cpu"))
    finally:
        get_settings.cache_clear()
    torch.testing.assert_close(logits(other_host, tok), logits(same_host, tok))


def test_saved_tokenizer_chat_template_is_the_trained_template(base: Path, tmp_path: Path) -> None:
    """`--template alpaca` saves an alpaca chat template (not the tiny Q:/A: one): pipelines prompt alike."""
    from transformers import AutoTokenizer, pipeline

    from services.trainer.templates import encode_prompt, render_prompt

    out = tmp_path / "out"
    train_sft(
        str(base), PAIRS, out, tmp_path / "work", cfg(max_steps=1, method="full"), seed=1, template="alpaca"
    )
    tok = AutoTokenizer.from_pretrained(out)
    q = "What is 3 * 4?"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
    )
    assert "### Instruction:" in chat and "Q: " not in chat
    assert encode_prompt(tok, chat) == encode_prompt(tok, render_prompt("alpaca", tok, q))
    assert tok(chat, add_special_tokens=False)["input_ids"] == encode_prompt(tok, chat)  # BOS written by it
    gen = pipeline("text-generation", model=str(out), device="cpu")
    reply = gen([{"role": "user", "content": q}], max_new_tokens=3, do_sample=False)
    assert reply[0]["generated_text"][-1]["role"] == "assistant"


def test_stage_names_a_tiny_student_by_its_store_key(tmp_path: Path) -> None:
    """The train stage hands the trainer the store's path but the checkpoint the `models/<key>`."""
    from services.trainer.models import ARTIFACT_REF
    from shared.artifacts import LocalStore
    from shared.orchestration.stages import resolve_student, student_base
    from shared.specs import StudentSpec

    store = LocalStore(tmp_path / "store")
    spec = StudentSpec(name="tiny", model="tiny:xs")
    path, ref = student_base(spec, "unused", "arith", store)
    assert ARTIFACT_REF.match(ref) and Path(path) == store.fetch("models", ref.split("/", 1)[1])
    assert resolve_student(spec, "unused", "arith", store) == path
    hub = StudentSpec(name="hub", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert student_base(hub, "unused", "arith", store) == (hub.model, hub.model)


def test_fused_lora_dropout_matches_peft_dropout(base: Path) -> None:
    """lora_A with the dropout inside draws the same mask as nn.Dropout (CPU) and gives the same
    loss and adapter gradients, keeping neither a mask nor copies of the input (it draws the mask
    again in backward from the saved generator state)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from services.trainer.lora_dropout import DropoutLinear, fuse_lora_dropout

    def adapted() -> torch.nn.Module:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base)
        lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, target_modules="all-linear")
        model = get_peft_model(model, lora)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)  # B = 0 would give lora_A no gradient
        return model.train()

    ids = torch.randint(3, 50, (2, 12))
    grads, losses = [], []
    for fused in (False, True):
        model = adapted()
        if fused:
            assert fuse_lora_dropout(model) > 0
            assert any(isinstance(m, DropoutLinear) for m in model.modules())
        torch.manual_seed(7)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7)
    model.eval()  # eval: no dropout, the plain projection
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fused_lora_dropout_saves_only_the_input_and_weight() -> None:
    """What autograd keeps for a fused lora_A is the input and the weight: nothing a token more."""
    from services.trainer.lora_dropout import DropoutLinear

    layer = DropoutLinear(torch.nn.Linear(16, 4, bias=False), p=0.5).train()
    x = torch.randn(3, 5, 16, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    assert [tuple(t.shape) for t in saved] == [(3, 5, 16), (4, 16)]
    assert saved[0].data_ptr() == x.data_ptr()  # the caller's tensor, not a copy
    torch.rand(1)  # the generator moves on before backward, as it does in training
    before = torch.get_rng_state()
    y.sum().backward()  # draws the mask again from the forward's state, then puts the generator back
    assert torch.equal(torch.get_rng_state(), before)
    assert x.grad is not None and layer.weight.grad is not None
    assert (x.grad == 0).any()  # dropped inputs get no gradient
