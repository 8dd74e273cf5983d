"""Batched generation: prompts sorted by length, left padding, stop strings, per-sequence stop.

The pieces are pure where they can be (`batch_order`, `left_pad`, `finish`), so the transformers
path here and the vLLM path (`services.evaluator.vllm_backend`) turn token ids into text the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from services.trainer.templates import encode_prompt

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
    tokenizer,
    new_ids: Sequence[int],
    end_token_ids: Sequence[int],
    stop: Sequence[str],
    pad_id: int | None = None,
) -> Generation:
    """A Generation from generated ids: cut at the first end token, decode, cut at a stop string.

    With `pad_id`, trailing pads are dropped too (what `generate` fills in after a sequence that
    stopped at a stop string, while others in its batch went on).
    """
    ends = set(end_token_ids)
    n = next((j for j, t in enumerate(new_ids) if t in ends), len(new_ids))
    while pad_id is not None and n > 0 and new_ids[n - 1] == pad_id:
        n -= 1
    text = tokenizer.decode(list(new_ids[:n]), skip_special_tokens=True)
    return Generation(cut_at_stop(text, stop).strip(), n)


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt token ids exactly as the trainer encodes them (`templates.encode_prompt`: BOS once)."""
    return [encode_prompt(tokenizer, p) for p in prompts]


def _cache_kwarg(model) -> str | None:
    """The forward() keyword of the KV cache, or None when the fast greedy loop cannot drive it.

    A peft wrapper passes its keywords through to the base model, whose forward decides.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def _stop_window(stop: Sequence[str]) -> int:
    """Tokens to decode to see any stop string that ends at the newest token (>= 1 char per token)."""
    return max((len(s) for s in stop), default=0) + 2


def greedy_batch(
    model,
    tokenizer,
    ids: torch.Tensor,
    mask: torch.Tensor,
    max_new_tokens: int,
    end_token_ids: Sequence[int],
    stop: Sequence[str] = (),
    cache_kwarg: str = "cache",
) -> list[list[int]]:
    """Greedy decoding of one left-padded batch with a KV cache; the generated ids of each row.

    A row leaves the batch (and the cache) as soon as it emits an end token or completes a stop
    string, so finished rows cost nothing; the batch ends when every row has. The cache grows in
    place (`kv_cache.GrowingLayer`) where the model allows it.
    """
    from transformers import DynamicCache

    from services.evaluator.kv_cache import growing_cache

    device = ids.device
    n = ids.shape[0]
    ends = torch.tensor(sorted(set(end_token_ids)), device=device)
    window = _stop_window(stop)
    buf = torch.zeros((n, max_new_tokens), dtype=torch.long, device=device)  # generated ids per row
    lengths = torch.zeros(n, dtype=torch.long, device=device)
    rows = torch.arange(n, device=device)  # batch position -> original row
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = growing_cache(model)
    if cache is None:  # not plain full-attention layers: transformers' own cache
        cache = DynamicCache(config=model.config)
    step_ids = ids
    for step in range(max_new_tokens):
        logits = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            **{cache_kwarg: cache},
        ).logits[:, -1]
        nxt = logits.argmax(-1)
        buf[rows, step] = nxt
        lengths[rows] = step + 1
        done = torch.isin(nxt, ends)
        if stop:  # stop strings need text: only the rows still running are decoded
            for b in (~done).nonzero().flatten().tolist():
                tail = buf[rows[b], max(0, step + 1 - window) : step + 1].tolist()
                done[b] = any(s in tokenizer.decode(tail, skip_special_tokens=True) for s in stop)
        keep = (~done).nonzero().flatten()
        if keep.numel() == 0 or step == max_new_tokens - 1:
            break
        if keep.numel() < rows.numel():
            cache.batch_select_indices(keep)
            mask, pos, nxt, rows = mask[keep], pos[keep], nxt[keep], rows[keep]
        mask = torch.cat([mask, mask.new_ones((rows.numel(), 1))], dim=1)
        pos = pos[:, -1:] + 1
        step_ids = nxt[:, None]
    return [buf[i, : int(lengths[i])].tolist() for i in range(n)]


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
    have. Greedy decoding runs `greedy_batch` (finished rows leave the batch); beam search, and
    models whose forward takes no cache argument, go through `model.generate`.
    `on_batch(indices, generations)` is called after each batch (used to persist progress).
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
    cache_kwarg = _cache_kwarg(model) if num_beams == 1 else None
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    for idx in batch_order([len(e) for e in encoded], batch_size, sort_by_length):
        ids, mask = left_pad([encoded[i] for i in idx], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        if cache_kwarg is not None:
            new = greedy_batch(model, tokenizer, ids, mask, max_new_tokens, end_token_ids, stop, cache_kwarg)
            trailing_pad = None
        else:
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=num_beams,
                num_return_sequences=1,
                eos_token_id=list(end_token_ids),
                pad_token_id=pad_id,
                **kwargs,
            )
            new, trailing_pad = out[:, ids.shape[1] :].tolist(), pad_id
        gens = [finish(tokenizer, row, end_token_ids, stop, trailing_pad) for row in new]
        for i, g in zip(idx, gens, strict=True):
            results[i] = g
        if on_batch:
            on_batch(idx, gens)
    return [r for r in results if r is not None]
