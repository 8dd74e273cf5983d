"""GGUF files (llama.cpp, Ollama, LM Studio) turned into plain safetensors checkpoints.

transformers reads a GGUF file of a supported architecture (dequantising its tensors) but refuses
to save the result ("quantized with gguf and is not serializable"), so the model is rebuilt from
its config without the GGUF quantisation entry and given the dequantised weights. The tokenizer
and its chat template come from the same file. `cotd_model.json` records the source file's
sha256, so a converted checkpoint names exactly what it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from services.trainer.models import default_file_modes
from shared.artifacts import ArtifactStore
from shared.errors import CotdError, first_line
from shared.keys import content_key, file_sha256

MODEL_INFO = "cotd_model.json"
DTYPES = ("bf16", "fp32")
GGUF_VERSION = "gguf-v1"  # bump when the conversion changes what it writes


class GGUFImportError(CotdError):
    """A GGUF file that cannot be converted (missing, unsupported architecture, unreadable)."""


def _torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise GGUFImportError(f"--dtype: must be one of {', '.join(DTYPES)}, got {name!r}")
    return torch.bfloat16 if name == "bf16" else torch.float32


def _load(path: Path):
    """The dequantised model and the tokenizer of a GGUF file, through transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise GGUFImportError(f"{path}: cannot be read as a GGUF model: {first_line(e)}") from None
    return gguf_model, tok


def _rebuild(gguf_model, dtype):
    """A serialisable copy of a GGUF-loaded model: same config minus the quantisation, same weights."""
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.use_cache = True
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise GGUFImportError(
            f"the GGUF weights do not fit {type(model).__name__}: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    model.tie_weights()
    return model.to(dtype).eval()


def import_gguf(gguf_file: str | Path, out: str | Path, dtype: str = "fp32") -> dict:
    """Convert `gguf_file` into a checkpoint folder `out` (weights, config, tokenizer, chat template).

    The folder appears whole or not at all (built beside it, then renamed). Returns the record
    written to `out/cotd_model.json`: source file name and sha256, architecture, dtype, parameters.
    """
    src, out = Path(gguf_file).expanduser(), Path(out).expanduser()
    if not src.is_file():
        raise GGUFImportError(f"{src}: no such GGUF file")
    if out.exists() and any(out.iterdir()):
        raise GGUFImportError(f"{out}: already exists and is not empty")
    torch_dtype = _torch_dtype(dtype)
    sha = file_sha256(src)
    gguf_model, tok = _load(src)
    model = _rebuild(gguf_model, torch_dtype)
    del gguf_model
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.model_max_length = getattr(model.config, "max_position_embeddings", None) or tok.model_max_length
    info = {
        "source": "gguf",
        "gguf_file": src.name,
        "gguf_sha256": sha,
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "chat_template": bool(getattr(tok, "chat_template", None)),
    }
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
        default_file_modes(tmp)
        if out.exists():
            out.rmdir()
        try:
            os.rename(tmp, out)
        except OSError:
            raise GGUFImportError(f"{out}: was created by another process during the conversion") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def gguf_model_key(sha256: str, dtype: str = "fp32") -> str:
    """The artifact key (kind `models`) of a converted GGUF file: its sha256, not its path."""
    return content_key("model", {"gguf_sha256": sha256, "dtype": dtype, "version": GGUF_VERSION})


def import_into_store(gguf_file: str | Path, store: ArtifactStore, dtype: str = "fp32") -> str:
    """Convert `gguf_file` once into `models/<key>` of the store; the key (cached when published)."""
    src = Path(gguf_file).expanduser()
    if not src.is_file():
        raise GGUFImportError(f"{src}: no such GGUF file")
    key = gguf_model_key(file_sha256(src), dtype)
    if not store.exists("models", key):
        work = store.scratch("models", key) / f"attempt-{uuid.uuid4().hex[:12]}"  # one folder per worker
        try:
            info = import_gguf(src, work / "out", dtype=dtype)
            store.publish("models", key, work / "out", info)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return key
