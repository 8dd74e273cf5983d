"""The response-only causal LM loss, wrapped as one module so DDP/FSDP see a single forward.

For common decoder families the LM head runs only on positions that carry a label (the
response), not on prompt or padding positions: the same loss as the full-logits path, with
less compute and no (batch x length x vocab) float tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from services.trainer.data import IGNORE

# Families whose ForCausalLM forward is exactly lm_head(decoder(x)) (no logit scaling or capping).
FAST_FAMILIES = {
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "bloom",
    "olmo",
    "olmo2",
    "stablelm",
    "starcoder2",
    "smollm3",
    "gpt_neox",
}


def base_model(lm: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA layers stay injected in it)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def supports_fast_head(lm: nn.Module) -> bool:
    """Whether the selected-positions LM head gives the model's own logits."""
    base = base_model(lm)
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in FAST_FAMILIES:
        return False
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if getattr(text_cfg, "final_logit_softcapping", None):
        return False
    return hasattr(base, "get_decoder") and base.get_output_embeddings() is not None


class ResponseLoss(nn.Module):
    """`forward(batch, n_label)` -> summed token CE / n_label.

    `batch` is a padded micro-batch (input_ids, attention_mask, labels) or a flattened one
    (input_ids, labels, position_ids, cu_seq_lens; see `services.trainer.packing`).
    """

    def __init__(self, lm: nn.Module, fast: bool | None = None):
        super().__init__()
        self.lm = lm
        self.fast = supports_fast_head(lm) if fast is None else fast

    def forward(self, batch: dict[str, torch.Tensor], n_label: int) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "use_cache": False}
        if "cu_seq_lens" in batch:
            inputs |= {"position_ids": batch["position_ids"], "cu_seq_lens_q": batch["cu_seq_lens"]}
        else:
            inputs["attention_mask"] = batch["attention_mask"]
        shift_labels = batch["labels"][:, 1:]
        keep = shift_labels != IGNORE
        if self.fast:
            base = base_model(self.lm)
            h = base.get_decoder()(**inputs).last_hidden_state[:, :-1][keep]
            logits = base.get_output_embeddings()(h).float()
        else:
            logits = self.lm(**inputs).logits[:, :-1][keep].float()
        return nn.functional.cross_entropy(logits, shift_labels[keep], reduction="sum") / max(1, n_label)
