"""Batched generation: prompts sorted by length, left padding, stop strings, per-sequence stop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Generation:
    """One model output and its number of generated tokens."""

    text: str
    n_tokens: int


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The text up to the first stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


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
    on_batch: Callable[[list[int], list[Generation]], None] | None = None,
) -> list[Generation]:
    """Generate for every prompt (greedy unless num_beams > 1); outputs in prompt order.

    `on_batch(indices, generations)` is called after each batch (used to persist progress).
    """
    stop = stop or []
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i])) if sort_by_length else list(range(len(prompts)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_token_ids[0]
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(encoded[i])
            ids[row, width - n :] = torch.tensor(encoded[i])
            mask[row, width - n :] = 1
        kwargs = {}
        if stop:
            kwargs |= {"stop_strings": stop, "tokenizer": tokenizer}
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=num_beams,
            eos_token_id=end_token_ids,
            pad_token_id=pad_id,
            **kwargs,
        )
        new = out[:, width:].tolist()
        gens = []
        for row in new:
            n = len(row)
            for j, t in enumerate(row):
                if t in end_token_ids:
                    n = j
                    break
            text = tokenizer.decode(row[:n], skip_special_tokens=True)
            gens.append(Generation(cut_at_stop(text, stop).strip(), n))
        for i, g in zip(idx, gens, strict=True):
            results[i] = g
        if on_batch:
            on_batch(idx, gens)
    return [r for r in results if r is not None]
