"""Trainer and evaluator render and tokenise prompts identically; prompt tokens are masked."""

from __future__ import annotations

import pytest

from services.evaluator.generate import encode_prompts
from services.trainer.data import IGNORE, encode_pair
from services.trainer.templates import TINY_CHAT_TEMPLATE, end_token, render_prompt, resolve_template
from services.trainer.tiny import train_tokenizer

SPECIAL = {
    "llama3": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "gemma": ["<bos>", "<start_of_turn>", "<end_of_turn>"],
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "alpaca": [],
    "auto": [],
}
END = {
    "llama3": "<|eot_id|>",
    "gemma": "<end_of_turn>",
    "chatml": "<|im_end|>",
    "alpaca": "<|eos|>",
    "auto": "<|eos|>",
}
QUESTION = "Tom has 12 apples and eats 3. How many are left?"
RESPONSE = " He had 12 apples and ate 3, so 12 - 3 = 9 remain. The answer is 9"


def tokenizer_for(template: str):
    """A tiny BPE tokenizer with the template's special tokens added."""
    tok = train_tokenizer(
        [QUESTION, RESPONSE, "user assistant model Instruction Response"] * 3, vocab_size=300
    )
    if SPECIAL[template]:
        tok.add_special_tokens({"additional_special_tokens": SPECIAL[template]})
    if template == "auto":
        tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


@pytest.mark.parametrize("template", ["llama3", "gemma", "alpaca", "chatml", "auto"])
def test_prompt_tokens_match_evaluator_and_are_masked(template: str) -> None:
    tok = tokenizer_for(template)
    ex = encode_pair(tok, template, QUESTION, RESPONSE, cutoff=4096)
    prompt_ids = encode_prompts(tok, [render_prompt(template, tok, QUESTION)])[0]
    n = len(prompt_ids)
    assert ex.input_ids[:n] == prompt_ids
    for sid in tok.convert_tokens_to_ids(SPECIAL[template]):
        assert sid in ex.input_ids  # special tokens stay single tokens
    resp_ids = tok(RESPONSE.strip(), add_special_tokens=False)["input_ids"]
    end_id = tok.convert_tokens_to_ids(END[template])
    assert end_token(template, tok) == END[template]
    assert ex.input_ids[n:] == resp_ids + [end_id]
    for i, (tid, lab) in enumerate(zip(ex.input_ids, ex.labels, strict=True)):
        assert lab == (IGNORE if i < n else tid), f"token {i}"
    assert not ex.truncated


def test_auto_uses_the_tokenizers_chat_template_else_alpaca() -> None:
    tok = tokenizer_for("auto")
    assert resolve_template("auto", tok) == "tokenizer"
    assert render_prompt("auto", tok, "2+2?") == "Q: 2+2?\nA: "
    tok.chat_template = None
    assert resolve_template("auto", tok) == "alpaca"
    with pytest.raises(ValueError, match="unknown template"):
        resolve_template("vicuna", tok)


def test_long_response_is_truncated_and_prompt_stays_masked() -> None:
    tok = tokenizer_for("chatml")
    full = encode_pair(tok, "chatml", QUESTION, RESPONSE, cutoff=4096)
    n_prompt = sum(1 for x in full.labels if x == IGNORE)
    ex = encode_pair(tok, "chatml", QUESTION, RESPONSE, cutoff=n_prompt + 5)
    assert ex.truncated and len(ex.input_ids) == n_prompt + 5
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]


CHAT_TEMPLATES = {
    "<|im_end|>": (
        ["<|im_start|>", "<|im_end|>"],
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    ),
    "<end_of_turn>": (
        ["<bos>", "<start_of_turn>", "<end_of_turn>"],
        "{{ bos_token }}{% for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' "
        "else m['role']) + '\n' + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
    ),
    "<|eot_id|>": (
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] "
        "+ '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    ),
}


@pytest.mark.parametrize("end", list(CHAT_TEMPLATES))
def test_auto_ends_responses_with_the_chat_templates_end_of_turn(end: str) -> None:
    tokens, chat = CHAT_TEMPLATES[end]
    tok = tokenizer_for("alpaca")
    tok.add_special_tokens({"additional_special_tokens": tokens})
    tok.chat_template = chat
    assert end_token("auto", tok) == end  # not EOS (<|eos|>)
    ex = encode_pair(tok, "auto", QUESTION, RESPONSE, cutoff=4096)
    assert ex.input_ids[-1] == tok.convert_tokens_to_ids(end)


def test_bos_is_put_first_once_and_only_where_the_tokenizer_has_one() -> None:
    from services.trainer.templates import encode_prompt

    tok = tokenizer_for("alpaca")
    text = render_prompt("alpaca", tok, QUESTION)
    ids = encode_prompt(tok, text)
    assert ids[0] == tok.bos_token_id and ids[1:] == tok(text, add_special_tokens=False)["input_ids"]
    assert encode_prompt(tok, tok.bos_token + text) == ids  # a template that writes BOS gets no second
    assert encode_pair(tok, "alpaca", QUESTION, RESPONSE, 4096).input_ids[: len(ids)] == ids
    tok.bos_token = None
    assert encode_prompt(tok, text) == tok(text, add_special_tokens=False)["input_ids"]


def test_template_tokens_missing_from_the_vocabulary_are_refused() -> None:
    from services.trainer.templates import TemplateError

    tok = tokenizer_for("alpaca")
    for name in ("llama3", "gemma", "chatml"):
        with pytest.raises(TemplateError, match=f"template '{name}' needs the token"):
            encode_pair(tok, name, QUESTION, RESPONSE, 4096)
