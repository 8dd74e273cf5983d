"""Batched generation: prompts sorted by length, left padding, stop strings, per-sequence stop.

The pieces are pure where they can be (`batch_order`, `left_pad`, `finish`), so the transformers
path here and the vLLM path (`services.evaluator.vllm_backend`) turn token ids into text the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

OnBatch = Callable[[list[int], list["Generation"]], None]


@dataclass(frozen=True)
class Generation:
    """One model output and its number of generated tokens (before the end token)."""

    text: str
    n_tokens: int


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text up to the first stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s) if s else -1
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


def batch_order(lengths: Sequence[int], batch_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Prompt indices grouped into batches; longest prompts first when sorting (ties keep order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = (
        sorted(range(len(lengths)), key=lambda i: -lengths[i])
        if sort_by_length
        else list(range(len(lengths)))
    )
    return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of `seqs`, padded on the left to the longest."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[row, width - len(s) :] = 1
    return ids, mask


def finish(
    tokenizer, new_ids: Sequence[int], end_token_ids: Sequence[int], stop: Sequence[str]
) -> Generation:
    """A Generation from generated ids: cut at the first end token, decode, cut at a stop string."""
    ends = set(end_token_ids)
    n = next((j for j, t in enumerate(new_ids) if t in ends), len(new_ids))
    text = tokenizer.decode(list(new_ids[:n]), skip_special_tokens=True)
    return Generation(cut_at_stop(text, stop).strip(), n)


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt token ids exactly as the trainer encodes them (the template carries any BOS)."""
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


@torch.inference_mode()
def generate_batched(
    model,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    end_token_ids: list[int],
    stop: list[str] | None = None,
    num_beams: int = 1,
    sort_by_length: bool = True,
    on_batch: OnBatch | None = None,
) -> list[Generation]:
    """Generate for every prompt (greedy unless num_beams > 1); outputs in prompt order.

    Prompts are grouped by length (longest first) and left-padded; each sequence stops at an end
    token or a stop string (its output is cut there), and a batch ends when all of its sequences
    have. `on_batch(indices, generations)` is called after each batch (used to persist progress).
    """
    if not prompts:
        return []
    if not end_token_ids:
        raise ValueError("end_token_ids is empty: generation would never stop early")
    stop = [s for s in (stop or []) if s]
    device = next(model.parameters()).device
    encoded = encode_prompts(tokenizer, prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_token_ids[0]
    kwargs: dict = {"stop_strings": stop, "tokenizer": tokenizer} if stop else {}
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    for idx in batch_order([len(e) for e in encoded], batch_size, sort_by_length):
        ids, mask = left_pad([encoded[i] for i in idx], pad_id)
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=num_beams,
            num_return_sequences=1,
            eos_token_id=list(end_token_ids),
            pad_token_id=pad_id,
            **kwargs,
        )
        gens = [finish(tokenizer, row, end_token_ids, stop) for row in out[:, ids.shape[1] :].tolist()]
        for i, g in zip(idx, gens, strict=True):
            results[i] = g
        if on_batch:
            on_batch(idx, gens)
    return [r for r in results if r is not None]
