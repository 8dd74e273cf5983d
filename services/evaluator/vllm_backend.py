"""Optional vLLM backend for evaluation (GPU machines with ``pip install vllm``).

vLLM is imported lazily: nothing here touches it until `generate_vllm` runs. Prompts are sent as
token ids encoded exactly as the trainer encodes them, and generated ids are turned into text by
the same `finish` as the transformers path, so both backends cut outputs the same way.
Progress is reported chunk by chunk through `on_batch`, so a killed evaluation still resumes.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

from services.evaluator.errors import EvaluationError
from services.evaluator.generate import Generation, OnBatch, encode_prompts, finish


def vllm_available() -> bool:
    """Whether the `vllm` package can be imported (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise a clear `EvaluationError` when vLLM is not installed."""
    if not vllm_available():
        raise EvaluationError(
            "backend 'vllm' was requested but the vllm package is not installed; "
            "install it on a CUDA machine (pip install vllm) or use --backend transformers"
        )


def _engine(model_dir: Path, trust_remote_code: bool, seed: int = 0):
    """A vLLM engine for a full checkpoint, or for a LoRA adapter's base (plus the adapter request)."""
    from vllm import LLM

    adapter = model_dir / "adapter_config.json"
    if not adapter.exists():
        return LLM(model=str(model_dir), trust_remote_code=trust_remote_code, seed=seed), None
    from vllm.lora.request import LoRARequest

    from services.trainer.models import resolve_base

    conf = json.loads(adapter.read_text())
    base = conf.get("base_model_name_or_path")
    if not base:
        raise EvaluationError(f"{adapter}: no base_model_name_or_path; merge the adapter or use transformers")
    base = resolve_base(base)
    llm = LLM(
        model=base,
        tokenizer=str(model_dir),
        trust_remote_code=trust_remote_code,
        seed=seed,
        enable_lora=True,
        max_lora_rank=max(8, int(conf.get("r", 16))),
    )
    return llm, LoRARequest("adapter", 1, str(model_dir))


def generate_vllm(
    model_dir: str | Path,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    end_token_ids: Sequence[int],
    stop: Sequence[str] | None = None,
    num_beams: int = 1,
    chunk_size: int = 256,
    on_batch: OnBatch | None = None,
    trust_remote_code: bool = False,
) -> list[Generation]:
    """Generate for every prompt with vLLM (greedy, or beam search when num_beams > 1)."""
    require_vllm()
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    stop = [s for s in (stop or []) if s]
    llm, lora = _engine(Path(model_dir), trust_remote_code)
    if lora is not None and num_beams > 1:
        raise EvaluationError(
            "vLLM beam search over a LoRA adapter is not supported; merge it or use transformers"
        )
    encoded = encode_prompts(tokenizer, prompts)
    results: list[Generation] = []
    for b in range(0, len(prompts), chunk_size):
        idx = list(range(b, min(b + chunk_size, len(prompts))))
        inputs = [TokensPrompt(prompt_token_ids=encoded[i]) for i in idx]
        if num_beams > 1:
            from vllm.sampling_params import BeamSearchParams

            outs = llm.beam_search(inputs, BeamSearchParams(beam_width=num_beams, max_tokens=max_new_tokens))
            new_ids = [list(o.sequences[0].tokens)[len(encoded[i]) :] for i, o in zip(idx, outs, strict=True)]
        else:
            params = SamplingParams(
                temperature=0.0,
                max_tokens=max_new_tokens,
                stop=stop or None,
                stop_token_ids=list(end_token_ids),
                include_stop_str_in_output=True,  # `finish` cuts at the stop string, as on the other path
                skip_special_tokens=False,
            )
            outs = llm.generate(inputs, params, use_tqdm=False, lora_request=lora)
            new_ids = [list(o.outputs[0].token_ids) for o in outs]
        gens = [finish(tokenizer, ids, end_token_ids, stop) for ids in new_ids]
        results += gens
        if on_batch:
            on_batch(idx, gens)
    return results
