"""Rendering prompts with the templates of `shared.templates`, shared by the trainer and the evaluator so
both render prompts identically.

A named template (llama3, gemma, alpaca, chatml) is the model family's own single-turn format;
`auto` is the tokenizer's chat template when it has one, else alpaca. Prompts are encoded by
`encode_prompt` on both sides: the tokenizer's BOS is put first unless the text starts with it.
"""

from __future__ import annotations

import json

from shared.errors import CotdError
from shared.templates import ALPACA_SYSTEM, TEMPLATES

TOKENIZER = "tokenizer"
"""What `auto` resolves to when the tokenizer has a chat template (that template is used)."""


class TemplateError(CotdError, ValueError):
    """A template that cannot be used with this tokenizer (unknown, or its tokens are missing)."""


# The chat template given to tiny students, so that `auto` works for them too.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\nA: "
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
TEMPLATE_MARKERS = ["Q: \nA: ", ALPACA_SYSTEM, "### Instruction:\n", "### Response:\n"]
_SENTINEL = "COTD-SENTINEL-7f3a"
FAMILY_BOS = ("<|begin_of_text|>", "<bos>", "<s>")
"""Beginning-of-text tokens the families' formats write themselves (no second BOS before them)."""


def check_controls(name: str, tokenizer) -> None:
    """Refuse a named template whose control tokens are not single tokens of the tokenizer."""
    vocab = tokenizer.get_vocab()
    for t in TEMPLATES[name].controls:
        if t not in vocab or tokenizer(t, add_special_tokens=False)["input_ids"] != [vocab[t]]:
            raise TemplateError(
                f"template {name!r} needs the token {t} that this tokenizer does not have; "
                "use --template auto or alpaca"
            )


def resolve_template(name: str, tokenizer) -> str:
    """`auto` becomes `tokenizer` when the tokenizer has a chat template, else `alpaca`.

    A named template is checked against the tokenizer (its control tokens must be in the vocabulary).
    """
    if name == "auto":
        return TOKENIZER if getattr(tokenizer, "chat_template", None) else "alpaca"
    if name == TOKENIZER:
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError("template 'tokenizer': this tokenizer has no chat template")
        return name
    if name not in TEMPLATES:
        raise TemplateError(f"unknown template {name!r}: one of auto, {', '.join(TEMPLATES)}")
    check_controls(name, tokenizer)
    return name


def render_prompt(template: str, tokenizer, question: str) -> str:
    """The prompt text for a question, ending where the response starts."""
    name = resolve_template(template, tokenizer)
    if name == TOKENIZER:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return TEMPLATES[name].prompt.format(question=question)


def needs_bos(tokenizer, text: str) -> bool:
    """Whether `encode_prompt` puts BOS before `text`: the tokenizer has one and the text starts with none."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or tokenizer.bos_token_id is None:
        return False
    return not text.startswith((bos, *FAMILY_BOS))


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Prompt token ids, as the trainer and the evaluator both encode them (BOS first, once)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id, *ids] if needs_bos(tokenizer, text) else list(ids)


def _special_tokens(tokenizer) -> list[str]:
    """The tokenizer's special and added tokens, longest first."""
    names = set(getattr(tokenizer, "all_special_tokens", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    names |= {str(t) for t in decoder.values()}
    return sorted((n for n in names if n), key=len, reverse=True)


def chat_end_token(tokenizer) -> str | None:
    """The end-of-turn token the tokenizer's chat template writes after an assistant reply.

    Found by rendering a reply and reading the special token that follows it (`<|im_end|>`,
    `<end_of_turn>`, `<|eot_id|>`, or EOS); None when the template writes none.
    """
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - templates raise anything (jinja exceptions, role checks)
        return None
    if _SENTINEL not in text:
        return None
    after = text.split(_SENTINEL, 1)[1].lstrip(" ")
    return next((t for t in _special_tokens(tokenizer) if after.startswith(t)), None)


def end_token(template: str, tokenizer) -> str:
    """The token string appended to every response (the template's end of turn, or EOS)."""
    name = resolve_template(template, tokenizer)
    end = chat_end_token(tokenizer) if name == TOKENIZER else TEMPLATES[name].end
    if end and end in tokenizer.get_vocab():
        return end
    if tokenizer.eos_token is None:
        raise TemplateError("the tokenizer has no EOS token; choose a template whose end token it knows")
    return tokenizer.eos_token


def _lit(text: str) -> str:
    """A Jinja expression printing `text` verbatim (immune to the block whitespace rules)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def chat_template_for(template: str, tokenizer) -> str | None:
    """The Jinja chat template of a trained template, so `pipeline(messages)` prompts as training did.

    `auto` with a chat template keeps the tokenizer's own (None is returned: nothing to change).
    The BOS `encode_prompt` adds is written by the template, since chat pipelines add none.
    """
    name = resolve_template(template, tokenizer)
    if name == TOKENIZER:
        return None
    t = TEMPLATES[name]
    head, tail = t.prompt.split("{question}")
    bos = _lit(tokenizer.bos_token) if needs_bos(tokenizer, t.prompt) else ""
    end = _lit(t.end) if t.end else "{{ eos_token }}"
    if name == "alpaca":
        return (
            bos + "{% for m in messages %}{% if m['role'] == 'user' %}"
            + _lit(head) + "{{ m['content'] }}" + _lit(tail)
            + "{% elif m['role'] == 'assistant' %}{{ m['content'] }}" + end + "{% endif %}{% endfor %}"
        )  # fmt: skip
    # the chat formats: a header per turn, the user's header as the prompt's, the reply's at the end
    start = "<|begin_of_text|>" if name == "llama3" else "<bos>" if name == "gemma" else ""
    user_head = head[len(start) :]
    opener, _, rest = user_head.partition("user")
    reply_head = tail[len(t.end or "") + len(t.turn_end) :]
    role = "('model' if m['role'] == 'assistant' else m['role'])" if name == "gemma" else "m['role']"
    return (
        bos + _lit(start) + "{% for m in messages %}" + _lit(opener) + "{{ " + role + " }}" + _lit(rest)
        + "{{ m['content'] }}" + end + _lit(t.turn_end) + "{% endfor %}"
        + "{% if add_generation_prompt %}" + _lit(reply_head) + "{% endif %}"
    )  # fmt: skip
