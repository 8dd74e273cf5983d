"""The prompt templates, listed once: a student's `template` (besides `auto`) is one of `TEMPLATES`.

Adding a template is one entry here; `shared.config.Template`, the trainer's `--template` and the
renderer (`services/trainer/templates.py`) read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPACA_SYSTEM = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


@dataclass(frozen=True)
class ChatTemplate:
    """A prompt wrapper, the token string that ends the response, and its control tokens."""

    prompt: str  # contains {question}
    end: str | None  # end-of-turn token string; None = the tokenizer's EOS
    controls: tuple[str, ...] = ()  # tokens that must be single tokens of the vocabulary
    turn_end: str = ""  # text after the end token between turns (chat template only)


TEMPLATES: dict[str, ChatTemplate] = {
    "llama3": ChatTemplate(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "gemma": ChatTemplate(
        "<bos><start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n",
        "<end_of_turn>",
        ("<bos>", "<start_of_turn>", "<end_of_turn>"),
        "\n",
    ),
    "alpaca": ChatTemplate(ALPACA_SYSTEM + "\n\n### Instruction:\n{question}\n\n### Response:\n", None),
    "chatml": ChatTemplate(
        "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>",
        ("<|im_start|>", "<|im_end|>"),
        "\n",
    ),
}
