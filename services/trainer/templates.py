"""Rendering prompts with the templates of `shared.templates`, shared by the trainer and the evaluator so both
render prompts identically."""

from __future__ import annotations

from shared.templates import ALPACA_SYSTEM, TEMPLATES

# The chat template given to tiny students, so that `auto` works for them too.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\nA: "
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
TEMPLATE_MARKERS = ["Q: \nA: ", ALPACA_SYSTEM, "### Instruction:\n", "### Response:\n"]


def resolve_template(name: str, tokenizer) -> str:
    """`auto` becomes `tokenizer` when the tokenizer has a chat template, else `alpaca`."""
    if name == "auto":
        return "tokenizer" if getattr(tokenizer, "chat_template", None) else "alpaca"
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}: one of auto, {', '.join(TEMPLATES)}")
    return name


def render_prompt(template: str, tokenizer, question: str) -> str:
    """The prompt text for a question, ending where the response starts."""
    name = resolve_template(template, tokenizer)
    if name == "tokenizer":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return TEMPLATES[name].prompt.format(question=question)


def end_token(template: str, tokenizer) -> str:
    """The token string appended to every response (end of turn, or EOS)."""
    name = resolve_template(template, tokenizer)
    end = TEMPLATES[name].end if name in TEMPLATES else None
    if end and end in tokenizer.get_vocab():
        return end
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no EOS token; choose a template whose end token it knows")
    return tokenizer.eos_token
