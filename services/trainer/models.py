"""Student models: load (full / LoRA / QLoRA), and save what the evaluator loads back.

- full: every weight trains (fp32 master weights; bf16 autocast on GPU).
- lora: a frozen base (bf16 on GPU) with peft LoRA adapters (fp32) on `lora_target_modules`.
- qlora: the base quantised to 4-bit NF4 by bitsandbytes (CUDA only), LoRA adapters on top.

A LoRA checkpoint is the adapter (adapter_config.json + adapter_model.safetensors) plus the
tokenizer; adapter_config.json's `base_model_name_or_path` names the base (a hub id, or the
absolute path of a local base, so it loads offline). With `merge_lora` the checkpoint is the
merged full model instead.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import torch

from services.trainer.loop import TrainingError, use_bf16
from shared.config import TrainingConfig

log = logging.getLogger("cotd.trainer")


def attention_impl() -> str:
    """flash_attention_2 when flash-attn is installed and a GPU is there, else PyTorch SDPA."""
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def base_reference(model_id: str) -> str:
    """How the adapter names its base: an absolute path for a local folder, else the hub id."""
    p = Path(model_id).expanduser()
    return str(p.resolve()) if p.is_dir() else model_id


def load_tokenizer(model_id: str, revision: str | None, trust_remote_code: bool):
    """The student's tokenizer, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _quantization(cfg: TrainingConfig, device: torch.device):
    if cfg.method != "qlora":
        return None
    if device.type != "cuda":
        raise TrainingError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit); use method 'lora' on this device")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError("QLoRA needs bitsandbytes: pip install bitsandbytes (or use method 'lora')")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_student(
    model_id: str,
    revision: str | None,
    trust_remote_code: bool,
    cfg: TrainingConfig,
    seed: int,
    device: torch.device,
):
    """The trainable student (peft-wrapped for LoRA/QLoRA) on `device`, and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = load_tokenizer(model_id, revision, trust_remote_code)
    quant = _quantization(cfg, device)
    torch.manual_seed(seed)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    attn = attention_impl() if device.type == "cuda" else "sdpa"
    frozen_dtype = torch.bfloat16 if use_bf16(cfg, device) else torch.float32
    if cfg.from_scratch:
        if cfg.method == "qlora":
            raise TrainingError("QLoRA needs pretrained weights; it cannot train from scratch")
        config = AutoConfig.from_pretrained(model_id, **kwargs)
        model = AutoModelForCausalLM.from_config(
            config, trust_remote_code=trust_remote_code, attn_implementation=attn
        )
    elif quant is not None:
        model = AutoModelForCausalLM.from_pretrained(
            model_id,
            quantization_config=quant,
            dtype=torch.bfloat16,
            attn_implementation=attn,
            device_map={"": device.index or 0},
            **kwargs,
        )
    else:
        # Full fine-tuning keeps fp32 master weights (bf16 autocast does the compute on GPU);
        # a LoRA base is frozen, so it is held in the compute dtype.
        dtype = frozen_dtype if cfg.method == "lora" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(
            model_id, dtype=dtype, attn_implementation=attn, **kwargs
        )
    checkpointing = cfg.gradient_checkpointing == "on" or (
        cfg.gradient_checkpointing == "auto" and device.type == "cuda"
    )
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if cfg.method in ("lora", "qlora"):
        model = add_lora(model, cfg, base_reference(model_id), revision)
    if quant is None:
        model = model.to(device)
    return model, tok


def add_lora(model, cfg: TrainingConfig, base_ref: str, revision: str | None):
    """Wrap the model with peft LoRA adapters as configured (rank, alpha, dropout, targets)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
        bias="none",
        revision=revision,
    )
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as e:
        raise TrainingError(
            f"LoRA target modules {cfg.lora_target_modules!r} do not fit this model: {e}"
        ) from None
    peft_model.peft_config["default"].base_model_name_or_path = base_ref
    return peft_model


def save_checkpoint(model, tok, out_dir: Path, cfg: TrainingConfig, state_dict: dict | None = None) -> None:
    """Write safetensors weights (full model, or LoRA adapter / merged model) and the tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(
        out_dir, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {})
    )
    tok.save_pretrained(out_dir)
    if cfg.method in ("lora", "qlora") and cfg.merge_lora:
        merge_adapter(out_dir)


def default_file_modes(folder: Path) -> None:
    """Give every file in `folder` the mode a new file gets (safetensors writes its weights 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in Path(folder).rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~umask)


def merge_adapter(adapter_dir: Path, dtype: torch.dtype | None = None) -> None:
    """Replace the adapter in `adapter_dir` by the base with the adapter merged in (full weights).

    The base is reloaded unquantised on CPU, so QLoRA adapters merge into full-precision weights.
    """
    from peft import AutoPeftModelForCausalLM

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, dtype=dtype or torch.float32)
    merged = model.merge_and_unload()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        (adapter_dir / name).unlink(missing_ok=True)
    merged.save_pretrained(adapter_dir, safe_serialization=True)
    (adapter_dir / "merged_from.json").write_text(
        json.dumps({"base_model": cfg.get("base_model_name_or_path")})
    )
    log.info("merged the LoRA adapter into %s", cfg.get("base_model_name_or_path"))
