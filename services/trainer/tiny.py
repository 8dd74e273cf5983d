"""Tiny students built offline: a byte-level BPE tokenizer trained on a corpus plus a small Llama.

Digits are split one per token (`Digits(individual_digits=True)` before `ByteLevel`), so a digit
is the same token wherever it stands, which is what lets a 150k-parameter model learn arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"


class TinySize(BaseModel):
    """The shape of a tiny Llama."""

    hidden_size: int = Field(description="Model width.")
    num_hidden_layers: int = Field(description="Decoder layers.")
    num_attention_heads: int = Field(description="Attention heads.")
    intermediate_size: int = Field(description="Feed-forward width.")


TINY_SIZES: dict[str, TinySize] = {
    "xs": TinySize(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192),
    "s": TinySize(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
    "m": TinySize(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=384),
    "l": TinySize(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 400):
    """A byte-level BPE tokenizer (digits split one per token) as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one per token, the same token wherever the digit stands (" 14" -> "Ġ", "1", "4").
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="right", model_max_length=4096
    )


def corpus_texts(files: list[str] | None) -> list[str]:
    """Texts to train the tokenizer on: the given dataset/CoT files, or the arith text by default."""
    from services.trainer.templates import TEMPLATE_MARKERS

    texts = list(TEMPLATE_MARKERS)
    if not files:
        from services.generator.teachers.procedural import rationale
        from shared.datasets.arith import make_problems
        from shared.specs import ArithParams

        for p in make_problems(ArithParams(), "train", 2000):
            texts.append(p.text)
            texts += [rationale(p, lvl, fmt) for lvl in range(1, 7) for fmt in ("cot", "subquestion", "rar", "symbolic")]
        return texts
    from shared.datasets.files import read_records

    for f in files:
        for rec in read_records(f):
            texts += [v for v in rec.data.values() if isinstance(v, str)]
    return texts


def init_tiny(
    out: str | Path, corpus: list[str] | None = None, size: str = "s", seed: int = 0, vocab_size: int | None = None
) -> Path:
    """Build and save a tiny student (tokenizer + randomly initialised Llama) under `out`.

    The vocabulary is 400 tokens for the arith text (the default corpus) and 4000 for other corpora.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from services.trainer.templates import TINY_CHAT_TEMPLATE

    if size not in TINY_SIZES:
        raise ValueError(f"unknown tiny size {size!r}: one of {', '.join(TINY_SIZES)}")
    out = Path(out)
    tok = train_tokenizer(corpus_texts(corpus), vocab_size=vocab_size or (4000 if corpus else 400))
    tok.chat_template = TINY_CHAT_TEMPLATE
    shape = TINY_SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        **shape.model_dump(),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
