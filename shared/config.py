"""Typed configuration blocks shared by the grid, the CLI and the workers.

Every field carries help text (TRL style); `cotd train --help` and the README grid
reference are written from the same descriptions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from shared.templates import TEMPLATES

Method = Literal["full", "lora", "qlora"]
Template = Literal[("auto", *TEMPLATES)]  # type: ignore[valid-type]
Format = Literal["cot", "subquestion", "rar", "symbolic"]

# Upper bounds, checked at submit: a grid past them would wedge or crash a worker (issue #18.8).
MAX_STEPS = 10_000_000
"""Optimizer steps (also warmup and checkpoint intervals)."""
MAX_EPOCHS = 1000
MAX_BATCH = 65_536
"""Sequences per step or prompts per generate call."""
MAX_TOKENS = 131_072
"""Tokens per example (cutoff) and new tokens per answer."""
MAX_BEAMS = 64
MAX_LORA = 65_536
MAX_ITEMS = 10_000_000
"""Questions of a split (train_size, test_size)."""
MAX_SEED = 2**32
"""Seeds are below this (numpy and CUDA take 32-bit seeds)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingConfig(_Strict):
    """Supervised fine-tuning settings. The defaults are the paper's."""

    method: Method = Field("full", description="full fine-tune, LoRA (peft) or QLoRA (4-bit, CUDA only).")
    lr: float = Field(5e-5, gt=0, le=1, description="Peak learning rate (AdamW), in (0, 1].")
    epochs: float = Field(
        3.0, gt=0, le=MAX_EPOCHS, description="Passes over the CoT set (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(
        None, gt=0, le=MAX_STEPS, description="Optimizer steps; overrides epochs when set."
    )
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="LR schedule after warmup."
    )
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Linear warmup steps.")
    global_batch_size: int = Field(
        64, gt=0, le=MAX_BATCH, description="Sequences per optimizer step (by gradient accumulation)."
    )
    micro_batch_size: int = Field(8, gt=0, le=MAX_BATCH, description="Sequences per forward pass.")
    cutoff: int = Field(
        4096, gt=8, le=MAX_TOKENS, description="Max tokens per example; longer responses are truncated."
    )
    weight_decay: float = Field(0.0, ge=0, le=10, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, le=1e6, description="Gradient clipping norm.")
    lora_r: int = Field(16, gt=0, le=MAX_LORA, description="LoRA rank.")
    lora_alpha: int = Field(32, gt=0, le=MAX_LORA, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get LoRA adapters."
    )
    merge_lora: bool = Field(
        False, description="Save LoRA merged into the base weights instead of an adapter."
    )
    save_every_steps: int = Field(
        200, gt=0, le=MAX_STEPS, description="Save a resumable checkpoint every N optimizer steps."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on GPU, fp32 on CPU."
    )
    gradient_checkpointing: Literal["auto", "on", "off"] = Field("auto", description="auto = on for GPU.")
    group_by_length: bool = Field(True, description="Length-grouped batches to cut padding.")
    padding_free: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Flatten each micro-batch into one row with per-example attention (no padding);"
        " auto = on for the model families that allow it (Llama, Gemma, Qwen, Mistral, ...), off for the others.",
    )
    parallel: Literal["none", "ddp", "fsdp"] = Field(
        "none",
        description="Data-parallel over the worker's GPUs (ddp) or sharded (fsdp), via accelerate/torchrun.",
    )
    from_scratch: bool = Field(
        False, description="Random init instead of pretrained weights (tiny students)."
    )

    def identity(self) -> dict[str, Any]:
        """The settings in a checkpoint's key: every field, except `padding_free` left at `auto`.

        `padding_free` was added after keys were published and changes only float rounding, so it
        enters the key only when set explicitly (the keys of existing checkpoints stay valid).
        """
        ident = self.model_dump()
        if self.padding_free == "auto":
            del ident["padding_free"]
        return ident


def _overrides_model() -> type[BaseModel]:
    """TrainingConfig with every field optional (same constraints), for per-student overrides."""
    fields: dict[str, Any] = {
        name: (
            (Annotated[f.annotation, *f.metadata] if f.metadata else f.annotation) | None,
            Field(None, description=f.description),
        )
        for name, f in TrainingConfig.model_fields.items()
    }
    return create_model("TrainingOverrides", __config__=ConfigDict(extra="forbid"), **fields)


TrainingOverrides = _overrides_model()


def apply_overrides(base: TrainingConfig, overrides: BaseModel | None) -> TrainingConfig:
    """The base training config with a student's overrides applied."""
    if overrides is None:
        return base
    return base.model_copy(update=overrides.model_dump(exclude_none=True))


class EvaluationConfig(_Strict):
    """Decoding and scoring settings."""

    batch_size: int = Field(32, gt=0, le=MAX_BATCH, description="Prompts per generate call.")
    max_new_tokens: int = Field(256, gt=0, le=MAX_TOKENS, description="Generation budget per answer.")
    num_beams: int = Field(1, gt=0, le=MAX_BEAMS, description="1 = greedy (default); the paper used 5 beams.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings (EOS always stops).")
    sort_by_length: bool = Field(True, description="Sort prompts by length before batching.")
    test_size: int | None = Field(None, gt=0, le=MAX_ITEMS, description="Score only the first N test items.")
    backend: Literal["transformers", "vllm", "auto"] = Field(
        "transformers",
        description="Generation backend; vllm (optional, GPU) when installed, auto picks it then.",
    )
