"""Student models: load (full / LoRA / QLoRA), and save what the evaluator loads back.

- full: every weight trains (fp32 master weights; bf16 autocast on GPU).
- lora: a frozen base (bf16 on GPU) with peft LoRA adapters (fp32) on `lora_target_modules`.
- qlora: the base quantised to 4-bit NF4 by bitsandbytes (CUDA only), LoRA adapters on top.

A LoRA checkpoint is the adapter (adapter_config.json + adapter_model.safetensors) plus the
tokenizer; adapter_config.json's `base_model_name_or_path` names the base as the user gave it (a
hub id, a path, or `models/<key>` for a tiny or converted model in the artifact store), never the
trainer's cache path, so an adapter published to S3 loads elsewhere (`resolve_base`). With
`merge_lora` the checkpoint is the merged full model instead.

Every checkpoint carries `cotd_checkpoint.json` (`CheckpointInfo`): the template it was trained
with (the evaluator uses it), its end token, the base, the attention and the parameter counts. The
saved tokenizer's chat template is the trained template, so `pipeline(messages)` prompts alike.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from services.trainer.loop import TrainingError, use_bf16
from services.trainer.lora_dropout import fuse_lora_dropout
from services.trainer.templates import (
    chat_template_for,
    end_token,
    needs_bos,
    render_prompt,
    resolve_template,
)
from shared.config import TrainingConfig
from shared.errors import CotdError

log = logging.getLogger("cotd.trainer")

CHECKPOINT_INFO = "cotd_checkpoint.json"
ARTIFACT_REF = re.compile(r"^models/[0-9a-f]{24}$")
EMBEDDING_MODULES = {"embed_tokens", "lm_head", "word_embeddings", "wte"}


class CheckpointInfo(BaseModel):
    """How a checkpoint was trained (`cotd_checkpoint.json`); the evaluator reads its template."""

    template: str = Field(
        description="Resolved template: llama3, gemma, alpaca, chatml, or tokenizer (the saved chat template)."
    )
    template_requested: str = Field(description="The template asked for (auto or a name).")
    end_token: str = Field(description="The token that ends every trained response.")
    bos: bool = Field(description="Whether encoded prompts start with the tokenizer's BOS.")
    base_model: str = Field(
        description="The base as the user gave it: hub id, path, or models/<artifact key>."
    )
    base_path: str | None = Field(
        None,
        exclude=True,
        description="Where the trainer loaded the base from, for merging; never saved (a host path).",
    )
    method: str = Field(description="full, lora or qlora.")
    merged: bool = Field(False, description="A LoRA adapter merged into full weights.")
    architecture: str = Field(description="The model class, e.g. LlamaForCausalLM.")
    attn_implementation: str | None = Field(None, description="The attention the trainer used.")
    parameters_total: int = Field(description="Parameters of the model as trained (base plus adapters).")
    parameters_trainable: int = Field(description="Parameters the optimizer updated.")


def model_class(config):
    """The causal-LM class transformers builds for `config` (None for remote code or unknown types)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        return None


def attention_impl(model_cls=None, device: torch.device | None = None) -> str | None:
    """The attention the class supports: FlashAttention-2 (CUDA, installed), then SDPA, then eager.

    BLOOM supports neither fused kernel and Gemma-2 refuses SDPA (soft-capping): both get eager.
    None (transformers' choice) for a class it cannot name, e.g. remote code.
    """
    if model_cls is None:
        return None
    on_cuda = device is not None and device.type == "cuda" and torch.cuda.is_available()
    if (
        on_cuda
        and getattr(model_cls, "_supports_flash_attn", False)
        and importlib.util.find_spec("flash_attn")
    ):
        return "flash_attention_2"
    if getattr(model_cls, "_supports_sdpa", False):
        return "sdpa"
    return "eager"


def artifact_ref(key: str) -> str:
    """How a checkpoint names a base held in the artifact store (kind `models`)."""
    return f"models/{key}"


def base_reference(model_id: str, given: str | None = None) -> str:
    """How the adapter names its base: what the user gave (`given`, else `model_id` as written)."""
    return given or model_id


def resolve_base(ref: str, fallback: str | None = None) -> str:
    """A loadable path or hub id for a recorded base: a folder, `models/<key>` from the store, or a hub id.

    `fallback` (a folder the caller already holds the base in, e.g. a stage's own store copy) is
    used when it exists here and the reference does not resolve locally.
    """
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser())
    here = fallback if fallback and Path(fallback).is_dir() else None
    if ARTIFACT_REF.match(ref):
        try:
            from shared.s3_store import open_store

            store = open_store()
            key = ref.split("/", 1)[1]
            if store.exists("models", key):
                return str(store.fetch("models", key))
        except (OSError, ValueError, RuntimeError) as e:
            log.warning("artifact store unavailable for base %s: %s", ref, e)
        if here:
            return here
        raise CotdError(f"base model {ref} is neither in the artifact store nor on this host")
    return here or ref


def read_info(folder: str | Path) -> CheckpointInfo | None:
    """The checkpoint's `cotd_checkpoint.json`, or None (an older or foreign checkpoint)."""
    path = Path(folder) / CHECKPOINT_INFO
    if not path.exists():
        return None
    try:
        return CheckpointInfo.model_validate_json(path.read_text())
    except ValueError as e:
        raise CotdError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None


def parameter_counts(model) -> dict[str, int]:
    """Total and trainable parameters (peft counts 4-bit weights at their real size)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters_total": int(total), "parameters_trainable": int(trainable)}


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
    base_ref: str | None = None,
):
    """The trainable student (peft-wrapped for LoRA/QLoRA) on `device`, and its tokenizer.

    `base_ref` is how an adapter names its base (default: `model_id` as given).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = load_tokenizer(model_id, revision, trust_remote_code)
    quant = _quantization(cfg, device)
    torch.manual_seed(seed)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    config = AutoConfig.from_pretrained(model_id, **kwargs)
    attn = attention_impl(model_class(config), device)
    frozen_dtype = torch.bfloat16 if use_bf16(cfg, device) else torch.float32
    if cfg.from_scratch:
        if cfg.method == "qlora":
            raise TrainingError("QLoRA needs pretrained weights; it cannot train from scratch")
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
    model.config.use_cache = False  # restored when saving
    if cfg.method in ("lora", "qlora"):
        model = add_lora(model, cfg, base_reference(model_id, base_ref), revision)
    if quant is None:
        model = model.to(device)
    return model, tok


def add_lora(model, cfg: TrainingConfig, base_ref: str, revision: str | None):
    """Wrap the model with peft LoRA adapters as configured (rank, alpha, dropout, targets).

    The dropout of plain LoRA Linears moves into lora_A (`fuse_lora_dropout`): same result, a bool
    mask kept for backward instead of two fp32 copies of every adapted input.
    """
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
    fuse_lora_dropout(peft_model)
    return peft_model


def checkpoint_info(
    model, tok, cfg: TrainingConfig, template: str, base_model: str, base_path: str | None, counts: dict
) -> CheckpointInfo:
    """What `save_checkpoint` records about the run (`cotd_checkpoint.json`)."""
    name = resolve_template(template, tok)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return CheckpointInfo(
        template=name,
        template_requested=template,
        end_token=end_token(name, tok),
        bos=needs_bos(tok, render_prompt(name, tok, "x")),
        base_model=base_model,
        base_path=base_path,
        method=cfg.method,
        merged=cfg.method != "full" and cfg.merge_lora,
        architecture=type(base).__name__.removeprefix("FSDP"),  # FSDP2 renames the sharded class
        attn_implementation=getattr(base.config, "_attn_implementation", None),
        **counts,
    )


def save_checkpoint(
    model,
    tok,
    out_dir: Path,
    cfg: TrainingConfig,
    state_dict: dict | None = None,
    info: CheckpointInfo | None = None,
) -> None:
    """Write safetensors weights (full model, or LoRA adapter / merged model), the tokenizer and `info`.

    The config keeps `use_cache: true`; the tokenizer's chat template becomes the trained template;
    every file gets the usual mode.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {"state_dict": state_dict} if state_dict else {}
    if hasattr(model, "get_base_model"):
        # peft's "auto" looks the base up on the hub (the reference may be a store key): decide here
        targets = cfg.lora_target_modules if isinstance(cfg.lora_target_modules, list) else []
        kwargs["save_embedding_layers"] = bool(set(targets) & EMBEDDING_MODULES)
        config = model.get_base_model().config
    else:
        config = model.config
    config.use_cache = True
    model.save_pretrained(out_dir, safe_serialization=True, **kwargs)
    if info is not None:
        chat = chat_template_for(info.template, tok)
        if chat is not None:
            tok.chat_template = chat
    tok.save_pretrained(out_dir)
    if info is not None:
        (out_dir / CHECKPOINT_INFO).write_text(info.model_dump_json(indent=2) + "\n")
    if cfg.method in ("lora", "qlora") and cfg.merge_lora:
        merge_adapter(out_dir, base_path=info.base_path if info else None)
    default_file_modes(out_dir)


def load_adapter(
    adapter_dir: str | Path,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    base_path: str | None = None,
):
    """A LoRA adapter over its base, the base found by `resolve_base` (store key, path or hub id).

    `base_path` is a folder holding the base on this host (the caller's store copy), if known.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = Path(adapter_dir)
    conf = json.loads((adapter_dir / "adapter_config.json").read_text())
    info = read_info(adapter_dir)
    ref = conf.get("base_model_name_or_path") or (info.base_model if info else None)
    if not ref:
        raise CotdError(f"{adapter_dir / 'adapter_config.json'}: names no base model")
    base = AutoModelForCausalLM.from_pretrained(
        resolve_base(ref, base_path),
        dtype=dtype or torch.float32,
        revision=conf.get("revision"),
        trust_remote_code=trust_remote_code,
    )
    return PeftModel.from_pretrained(base, adapter_dir)


def default_file_modes(folder: Path) -> None:
    """Give every file in `folder` the mode a new file gets (safetensors writes its weights 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in Path(folder).rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~umask)


def merge_adapter(adapter_dir: Path, dtype: torch.dtype | None = None, base_path: str | None = None) -> None:
    """Replace the adapter in `adapter_dir` by the base with the adapter merged in (full weights).

    The base is reloaded unquantised on CPU, so QLoRA adapters merge into full-precision weights;
    `base_path` is where the trainer found it (when the adapter names a store key or hub id).
    """
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    model = load_adapter(adapter_dir, dtype, base_path=base_path)
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        (adapter_dir / name).unlink(missing_ok=True)
    merged.save_pretrained(adapter_dir, safe_serialization=True)
    (adapter_dir / "merged_from.json").write_text(
        json.dumps({"base_model": cfg.get("base_model_name_or_path")})
    )
    log.info("merged the LoRA adapter into %s", cfg.get("base_model_name_or_path"))
