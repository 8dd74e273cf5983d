"""Padding-free micro-batches: the examples of a micro-batch flattened into one row.

The linear layers (most of the compute) then see only real tokens, and attention runs per
example: `varlen_sdpa` splits the flattened row at the example boundaries (`cu_seq_lens_q`,
FlashAttention's varlen convention) and calls SDPA causally on each piece. This is the CPU
counterpart of FlashAttention's varlen kernel: no padding anywhere, and no attention across the
whole flattened length (transformers' own packed-SDPA path masks a block-diagonal
(total x total) score matrix instead, which costs attention FLOPs quadratic in the total).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from services.trainer.data import IGNORE, Example
from services.trainer.errors import TrainingError
from services.trainer.loss import base_model

VARLEN_ATTENTION = "cotd_varlen_sdpa"

# Families whose attention goes through transformers' AttentionInterface with rotary positions
# taken from `position_ids` (so restarting them per example is all that packing needs).
# BLOOM (ALiBi from the attention mask) and soft-capped or sliding-window families are not here.
PACKABLE_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "olmo2", "phi3", "smollm3"}


def varlen_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA on each example of a flattened (1, heads, total, dim) row; (1, total, heads, dim) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(f"{VARLEN_ATTENTION} needs one flattened row and cu_seq_lens_q")
    bounds = cu_seq_lens_q.tolist()
    pieces = [
        sdpa_attention_forward(
            module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, dropout, scaling, is_causal=True
        )[0]
        for a, b in zip(bounds[:-1], bounds[1:], strict=False)
    ]
    return torch.cat(pieces, dim=1), None


def register_varlen_attention() -> None:
    """Make `VARLEN_ATTENTION` a transformers attention implementation (idempotent).

    It has no mask function on purpose: transformers then builds no attention mask at all.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa)


def _family(lm: nn.Module) -> str | None:
    return getattr(getattr(base_model(lm), "config", None), "model_type", None)


def supports_padding_free(lm: nn.Module, cutoff: int) -> bool:
    """Whether the model's family can train on flattened rows (no sliding window shorter than the cutoff)."""
    if _family(lm) not in PACKABLE_FAMILIES:
        return False
    cfg = base_model(lm).config
    window = getattr(cfg, "sliding_window", None)
    sliding = window and getattr(cfg, "use_sliding_window", True) and window < cutoff
    return not sliding and getattr(cfg, "_attn_implementation", None) in ("sdpa", "eager", VARLEN_ATTENTION)


def plan_padding_free(setting: str, lm: nn.Module, cutoff: int) -> bool:
    """The `padding_free` setting resolved for this model; `on` where it cannot be is an error."""
    able = supports_padding_free(lm, cutoff)
    if setting == "on" and not able:
        raise TrainingError(
            f"padding_free on: the {_family(lm)} family cannot train on flattened rows; set padding_free auto or off"
        )
    return able and setting != "off"


@contextlib.contextmanager
def flattened_attention(lm: nn.Module, enabled: bool) -> Iterator[None]:
    """Inside the block the model runs `VARLEN_ATTENTION` (when enabled); its own attention after."""
    if not enabled:
        yield
        return
    base = base_model(lm)
    own = base.config._attn_implementation
    register_varlen_attention()
    base.set_attn_implementation(VARLEN_ATTENTION)
    try:
        yield
    finally:
        base.set_attn_implementation(own)


def collate_flat(examples: list[Example]) -> dict[str, torch.Tensor]:
    """One (1, total) row: input_ids, labels, position_ids restarting per example, and the boundaries.

    The label of each example's first token is masked (a padded batch never uses it either), so the
    last token of one example is never trained to predict the next example.
    """
    lengths = [len(e.input_ids) for e in examples]
    bounds = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    labels = torch.tensor([t for e in examples for t in e.labels])
    labels[bounds[:-1].long()] = IGNORE
    return {
        "input_ids": torch.tensor([t for e in examples for t in e.input_ids])[None],
        "labels": labels[None],
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
        "cu_seq_lens": bounds,
    }
