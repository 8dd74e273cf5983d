"""Training examples: prompt/response tokenisation with prompt masking, length-grouped batches."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from services.trainer.templates import encode_prompt, end_token, render_prompt

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One tokenised example; `labels` is -100 on prompt tokens."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


def encode_pair(tokenizer, template: str, question: str, response: str, cutoff: int) -> Example:
    """Tokenise prompt (BOS first, see `encode_prompt`) and response apart; mask the prompt; append the end token.

    A response that does not fit the cutoff is truncated (the end token is then dropped).
    """
    prompt_ids = encode_prompt(tokenizer, render_prompt(template, tokenizer, question))
    end_id = tokenizer.convert_tokens_to_ids(end_token(template, tokenizer))
    resp_ids = tokenizer(response.strip(), add_special_tokens=False)["input_ids"] + [end_id]
    truncated = False
    if len(prompt_ids) >= cutoff:
        prompt_ids, truncated = prompt_ids[-(cutoff // 2) :], True
    room = cutoff - len(prompt_ids)
    if len(resp_ids) > room:
        resp_ids, truncated = resp_ids[:room], True
    return Example(prompt_ids + resp_ids, [IGNORE] * len(prompt_ids) + resp_ids, truncated)


def micro_batches(
    lengths: list[int], micro_batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """Micro-batches of example indices for one epoch, deterministic for (seed, epoch).

    With length grouping, indices are shuffled, cut into mega-batches of 64 micro-batches,
    sorted by length inside each, and the resulting micro-batches shuffled again.
    """
    rng = random.Random(seed * 100_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if not group_by_length:
        return [idx[i : i + micro_batch_size] for i in range(0, len(idx), micro_batch_size)]
    mega = micro_batch_size * 64
    batches: list[list[int]] = []
    for m in range(0, len(idx), mega):
        chunk = sorted(idx[m : m + mega], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + micro_batch_size] for i in range(0, len(chunk), micro_batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch into input_ids / attention_mask / labels tensors."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
