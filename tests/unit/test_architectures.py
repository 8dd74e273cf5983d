"""The paper's architectures as tiny random-init models: train full and LoRA, evaluate, compare.

Each family (Llama-3.2, Gemma, Gemma-2, BLOOM, Qwen2) is built from its config class with its
own special tokens on an offline BPE tokenizer. Both methods train a few steps through
`train_sft`; the evaluator's batched greedy predictions (with its KV cache and left padding) must
be token-identical to plain `model.generate` one prompt at a time. The README's architecture
table is filled from these tests.
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from services.evaluator.evaluate import checkpoint_template, evaluate_model, load_for_inference
from services.evaluator.generate import _cache_kwarg, finish, greedy_batch, left_pad
from services.trainer.loop import TrainingError
from services.trainer.models import CHECKPOINT_INFO, CheckpointInfo
from services.trainer.recipe import train_sft
from services.trainer.templates import (
    ALPACA_SYSTEM,
    TemplateError,
    chat_template_for,
    encode_prompt,
    end_token,
    render_prompt,
)
from services.trainer.tiny import train_tokenizer
from shared.config import EvaluationConfig, TrainingConfig
from tests.unit.evaluator_student import arith_questions

torch.set_num_threads(1)

# The families' own chat templates, as their instruct tokenizers ship them (tokenizer_config.json).
GEMMA_CHAT = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)  # google/gemma-2b-it, google/gemma-2-2b-it
LLAMA3_CHAT = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)  # meta-llama/Meta-Llama-3-8B-Instruct
CHATML_CHAT = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)  # Qwen2 / SmolLM2 (chatml, without a default system turn)

LLAMA3_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
GEMMA_TOKENS = ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]


@dataclass(frozen=True)
class Family:
    """A tiny member of a model family: its tokens, config, LoRA targets and templates to train."""

    name: str
    specials: dict  # bos/eos/pad token strings (None: the family has none)
    extra: list[str]
    chat_template: str | None
    full_template: str  # what the full run trains with
    lora_template: str  # what the LoRA run trains with
    lora_targets: list[str]
    attention: str  # what the trainer must pick on CPU
    config: dict = field(default_factory=dict)


FAMILIES = [
    Family(
        "llama-3.2",
        {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": None},
        LLAMA3_TOKENS[2:],
        None,  # Llama-3.2 base has no chat template: auto is alpaca, with <|begin_of_text|> first
        "llama3",
        "auto",
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "sdpa",
    ),
    Family(
        "gemma",
        {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"},
        GEMMA_TOKENS[3:],
        GEMMA_CHAT,
        "gemma",
        "auto",  # the chat template: responses end with <end_of_turn>, not <eos>
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "sdpa",
    ),
    Family(
        "gemma-2",
        {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"},
        GEMMA_TOKENS[3:],
        GEMMA_CHAT,
        "auto",
        "gemma",
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "eager",  # Gemma-2 refuses SDPA (soft-capping)
    ),
    Family(
        "bloom",
        {"bos": "<s>", "eos": "</s>", "pad": "<pad>"},
        [],
        None,
        "alpaca",
        "auto",
        ["query_key_value"],  # fused QKV
        "eager",  # ALiBi: neither SDPA nor FlashAttention in transformers
    ),
    Family(
        "qwen2",
        {"bos": None, "eos": "<|endoftext|>", "pad": "<|endoftext|>"},
        ["<|im_start|>", "<|im_end|>"],
        CHATML_CHAT,
        "auto",  # the chat template: responses end with <|im_end|>, not <|endoftext|>
        "chatml",
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "sdpa",
    ),
]
END_OF_TURN = {
    ("llama-3.2", "llama3"): "<|eot_id|>",
    ("llama-3.2", "auto"): "<|end_of_text|>",
    ("gemma", "gemma"): "<end_of_turn>",
    ("gemma", "auto"): "<end_of_turn>",
    ("gemma-2", "auto"): "<end_of_turn>",
    ("gemma-2", "gemma"): "<end_of_turn>",
    ("bloom", "alpaca"): "</s>",
    ("bloom", "auto"): "</s>",
    ("qwen2", "auto"): "<|im_end|>",
    ("qwen2", "chatml"): "<|im_end|>",
}
RESOLVED = {"auto": {True: "tokenizer", False: "alpaca"}}


def _pairs() -> list[tuple[str, str]]:
    from shared.datasets.arith import make_problems
    from shared.specs import ArithParams

    probs = make_problems(ArithParams(n_ops=1), "train", 24)
    return [(p.text, f"The answer is {p.answer}") for p in probs]


PAIRS = _pairs()


def family_tokenizer(fam: Family):
    """An offline BPE tokenizer with the family's special tokens (and chat template, if any)."""
    texts = [q + " " + r for q, r in PAIRS] + [ALPACA_SYSTEM, "### Instruction:\n### Response:\n"] * 2
    tok = train_tokenizer(texts + [" user model assistant system"] * 2, vocab_size=360)
    specials = {f"{k}_token": v for k, v in fam.specials.items() if v}
    tok.add_special_tokens(specials | {"additional_special_tokens": fam.extra})
    for k, v in fam.specials.items():
        if v is None:
            setattr(tok, f"{k}_token", None)
    tok.chat_template = fam.chat_template
    return tok


def family_config(fam: Family, tok):
    """The family's config class with tiny sizes and the family's distinctive settings."""
    from transformers import BloomConfig, Gemma2Config, GemmaConfig, LlamaConfig, Qwen2Config

    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    small = {"vocab_size": len(tok), "hidden_size": 32, "num_hidden_layers": 2, **ids}
    decoder = small | {"intermediate_size": 64, "num_attention_heads": 4, "max_position_embeddings": 1024}
    if fam.name == "llama-3.2":
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0}
        rope |= {"high_freq_factor": 4.0, "original_max_position_embeddings": 256}
        return LlamaConfig(**decoder, num_key_value_heads=2, tie_word_embeddings=True, rope_parameters=rope)
    if fam.name == "gemma":
        return GemmaConfig(**decoder, num_key_value_heads=1, head_dim=8)
    if fam.name == "gemma-2":
        return Gemma2Config(
            **decoder,
            num_key_value_heads=2,
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=8,  # shorter than the prompts: the sliding layer really slides
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        )
    if fam.name == "bloom":
        return BloomConfig(vocab_size=len(tok), hidden_size=32, n_layer=2, n_head=4, **ids)
    return Qwen2Config(**decoder, num_key_value_heads=2, tie_word_embeddings=True)


@pytest.fixture(scope="module", params=FAMILIES, ids=[f.name for f in FAMILIES])
def family(request, tmp_path_factory) -> tuple[Family, Path]:
    """A saved random-init tiny model of the family with its tokenizer."""
    from transformers import AutoModelForCausalLM

    fam = request.param
    tok = family_tokenizer(fam)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(family_config(fam, tok))
    root = tmp_path_factory.mktemp(fam.name)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return fam, root / "base"


def _cfg(method: str) -> TrainingConfig:
    lora = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    return TrainingConfig(
        method=method,
        lr=1e-2 if method == "full" else 3e-2,
        max_steps=30,  # enough to learn "The answer is N" and the end token: rows stop apart
        global_batch_size=8,
        micro_batch_size=8,
        cutoff=256,
        warmup_steps=0,
        save_every_steps=10**6,
        **lora,
    )


def _one_by_one(model, tok, prompts: list[str], end_ids: list[int], max_new: int) -> list[list[int]]:
    """Plain `model.generate`, one prompt at a time, greedy: the generated ids of each."""
    outs = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else end_ids[0]
    for p in prompts:
        ids = torch.tensor([encode_prompt(tok, p)])
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=end_ids,
            pad_token_id=pad,
        )
        outs.append(out[0, ids.shape[1] :].tolist())
    return outs


@pytest.mark.parametrize("method", ["full", "lora"])
def test_train_evaluate_and_batched_equals_one_by_one(family, method: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    fam, base = family
    template = fam.full_template if method == "full" else fam.lora_template
    cfg = _cfg(method).model_copy(update={"lora_target_modules": fam.lora_targets})
    out = tmp_path / "ckpt"
    s = train_sft(
        str(base), PAIRS, out, tmp_path / "work", cfg, seed=3, template=template, device_setting="cpu"
    )
    assert s["complete"] and all(x == x for x in s["losses"])

    # the checkpoint records how it was trained
    info = CheckpointInfo.model_validate_json((out / CHECKPOINT_INFO).read_text())
    want = RESOLVED.get(template, {}).get(fam.chat_template is not None, template)
    assert (info.template, info.template_requested) == (want, template)
    assert info.end_token == END_OF_TURN[(fam.name, template)]
    assert info.attn_implementation == fam.attention and info.base_model == str(base)
    assert 0 < info.parameters_trainable <= info.parameters_total
    assert (info.parameters_trainable == info.parameters_total) == (method == "full")
    assert s["parameters_total"] == info.parameters_total and s["template"] == want
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log and all(r["parameters_trainable"] == info.parameters_trainable for r in log)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # weights as readable as every other file
    if method == "lora":
        from safetensors.torch import load_file

        conf = json.loads((out / "adapter_config.json").read_text())
        assert conf["base_model_name_or_path"] == str(base)
        assert sorted(conf["target_modules"]) == sorted(fam.lora_targets)
        keys = load_file(str(out / "adapter_model.safetensors"))
        assert keys and all(any(t in k for t in fam.lora_targets) for k in keys)
    else:
        assert json.loads((out / "config.json").read_text())["use_cache"] is True

    # the saved tokenizer prompts as training did: its chat template is the trained template
    tok = AutoTokenizer.from_pretrained(out)
    q = "What is 2 + 3?"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
    )
    assert encode_prompt(tok, chat) == encode_prompt(tok, render_prompt(info.template, tok, q))

    # evaluation uses the recorded template and the evaluator's batches equal one-by-one generate
    questions = arith_questions(8)
    max_new = 12
    ev = EvaluationConfig(batch_size=3, max_new_tokens=max_new)
    evaluate_model(out, questions, tmp_path / "eval", ev, device_setting="cpu")
    rows = [json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    model, tok = load_for_inference(out, torch.device("cpu"))
    assert checkpoint_template(out) == info.template
    prompts = [render_prompt(info.template, tok, q.text) for q in questions]
    assert [r["prompt"] for r in rows] == prompts
    end_ids = sorted({tok.convert_tokens_to_ids(end_token(info.template, tok)), tok.eos_token_id} - {None})
    assert tok.convert_tokens_to_ids(info.end_token) in end_ids
    with torch.inference_mode():
        ref = _one_by_one(model, tok, prompts, end_ids, max_new)
        ids, mask = left_pad([encode_prompt(tok, p) for p in prompts], tok.pad_token_id)
        kwarg = _cache_kwarg(model)
        assert kwarg is not None  # the evaluator's own greedy loop, LoRA adapters included
        batched = greedy_batch(model, tok, ids, mask, max_new, end_ids, cache_kwarg=kwarg)
    assert batched == ref  # token-identical, end token included
    if method == "full":  # the student learned to end its turn, and generation stops right there
        end_id = tok.convert_tokens_to_ids(info.end_token)
        assert sum(bool(r) and r[-1] == end_id and len(r) < max_new for r in ref) >= len(ref) // 2, ref
    gens = [finish(tok, r, end_ids, []) for r in ref]
    assert [(r["output"], r["n_tokens"]) for r in rows] == [(g.text, g.n_tokens) for g in gens]


def test_template_whose_tokens_the_vocabulary_lacks_is_refused(tmp_path: Path) -> None:
    fam = next(f for f in FAMILIES if f.name == "bloom")
    tok = family_tokenizer(fam)
    for name, missing in (("gemma", "<bos>"), ("llama3", "<|begin_of_text|>"), ("chatml", "<|im_start|>")):
        with pytest.raises(
            TemplateError, match=f"template '{name}' needs the token {re.escape(missing)}"
        ) as e:
            render_prompt(name, tok, "x")
        assert "\n" not in str(e.value)
    base = tmp_path / "base"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(family_config(fam, tok)).save_pretrained(base)
    tok.save_pretrained(base)
    with pytest.raises(TrainingError, match="needs the token"):
        train_sft(str(base), PAIRS, tmp_path / "o", tmp_path / "w", _cfg("full"), seed=1, template="gemma")


# The families' documented single-turn formats (Meta's Llama 3 prompt format, Gemma's formatting
# guide, LLaMA-Factory's `alpaca` template as the paper trained with), for the question "Q?".
DOCUMENTED = {
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma": "<bos><start_of_turn>user\nQ?<end_of_turn>\n<start_of_turn>model\n",
    "alpaca": "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nQ?\n\n### Response:\n",
    "chatml": "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n",
}
OFFICIAL_CHAT = {"llama3": LLAMA3_CHAT, "gemma": GEMMA_CHAT, "chatml": CHATML_CHAT}


@pytest.mark.parametrize("name", ["llama3", "gemma", "alpaca", "chatml"])
def test_templates_are_the_families_own_formats(name: str) -> None:
    fam = {"llama3": FAMILIES[0], "gemma": FAMILIES[1], "alpaca": FAMILIES[3], "chatml": FAMILIES[4]}[name]
    tok = family_tokenizer(fam)
    assert render_prompt(name, tok, "Q?") == DOCUMENTED[name]
    ours = chat_template_for(name, tok)
    assert ours is not None
    turns = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "R."}]
    tok.chat_template = ours
    mine = [tok.apply_chat_template(turns[:1], add_generation_prompt=True, tokenize=False)]
    mine.append(tok.apply_chat_template(turns, tokenize=False))
    if name == "alpaca":
        assert mine == [
            tok.bos_token + DOCUMENTED[name],
            tok.bos_token + DOCUMENTED[name] + "R." + tok.eos_token,
        ]
        return
    tok.chat_template = OFFICIAL_CHAT[name]
    theirs = [tok.apply_chat_template(turns[:1], add_generation_prompt=True, tokenize=False)]
    theirs.append(tok.apply_chat_template(turns, tokenize=False))
    assert mine == theirs
