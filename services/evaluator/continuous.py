"""Continuous batching for greedy decoding: a finished row's place goes to the next prompt.

A static batch (`generate.greedy_batch`) decodes until its longest output ends, so it thins out
while every step still pays for reading all the weights (on CPU one step of SmolLM2-135M costs
about 90 ms for one row and 10 ms per row at 32). Here the batch is kept full: once a quarter of
its rows have ended, the next prompts (longest first) are prefilled on their own and appended to
the running KV cache, right-aligned (`GrowingLayer.append_rows`). Each row keeps its own left
padding in the attention mask and its own positions, so its tokens do not depend on its
neighbours; cache columns that no row attends to any more are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import torch

OnDone = Callable[[list[int], list[list[int]]], None]

#: drop leading cache columns only in chunks of at least this many (each drop is a view change)
TRIM_COLUMNS = 32


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    extra = width - mask.shape[1]
    return mask if extra == 0 else torch.cat([mask.new_zeros((mask.shape[0], extra)), mask], dim=1)


class _Batch:
    """The running rows: their KV cache, attention mask, next positions and pending tokens."""

    def __init__(self) -> None:
        self.cache = None
        self.mask = self.pos = self.nxt = None
        self.rows: list[int] = []  # prompt index of each row
        self.gen: list[list[int]] = []  # generated ids of each row (the pending token included)

    def add(self, cache, mask: torch.Tensor, pos: torch.Tensor, nxt: torch.Tensor, rows, gen) -> None:
        """Append rows (their own cache from a prefill) after the running ones."""
        if self.cache is None:
            self.cache, self.mask, self.pos, self.nxt = cache, mask, pos, nxt
        else:
            for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
                mine.append_rows(theirs)
            width = max(self.mask.shape[1], mask.shape[1])
            self.mask = torch.cat([_pad_mask(self.mask, width), _pad_mask(mask, width)])
            self.pos, self.nxt = torch.cat([self.pos, pos]), torch.cat([self.nxt, nxt])
        self.rows += rows
        self.gen += gen

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at `keep`; drop the leading columns no remaining row attends to."""
        if not keep:
            self.__init__()
            return
        if len(keep) < len(self.rows):
            idx = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(idx)
            self.mask, self.pos, self.nxt = self.mask[idx], self.pos[idx], self.nxt[idx]
            self.rows = [self.rows[i] for i in keep]
            self.gen = [self.gen[i] for i in keep]
        first = int(self.mask.any(0).int().argmax())
        if first >= TRIM_COLUMNS:
            for layer in self.cache.layers:
                layer.drop_left(first)
            self.mask = self.mask[:, first:]


def greedy_continuous(
    model,
    forward: Callable[..., torch.Tensor],
    new_cache: Callable[[], object],
    encoded: Sequence[Sequence[int]],
    order: Sequence[int],
    batch_size: int,
    max_new_tokens: int,
    is_done: Callable[[list[int]], bool],
    pad_id: int,
    on_done: OnDone,
) -> None:
    """Greedy decoding of the prompts `encoded`, admitted in `order`, at most `batch_size` at a time.

    `forward(ids, mask, pos, cache)` returns the last position's logits; `new_cache()` an empty
    growing cache; `is_done(generated_ids)` says whether a row has ended (end token or stop string;
    `max_new_tokens` also ends it). `on_done(prompt_indices, generated_ids)` receives finished rows.
    """
    from services.evaluator.generate import left_pad  # generate imports this module

    device = next(model.parameters()).device
    queue = deque(order)
    refill = max(1, batch_size // 4)
    batch = _Batch()

    def settle(start: int = 0) -> None:
        """Record the pending tokens of the rows from `start` on; finished rows go to `on_done`."""
        keep, done = list(range(start)), []
        for b, tok in enumerate(batch.nxt[start:].tolist(), start):
            g = batch.gen[b]
            g.append(tok)
            (done if len(g) >= max_new_tokens or is_done(g) else keep).append(b)
        if done:
            on_done([batch.rows[b] for b in done], [batch.gen[b] for b in done])
        batch.keep(keep)

    while queue or batch.rows:
        if queue and batch_size - len(batch.rows) >= min(refill, len(queue)):
            take = [queue.popleft() for _ in range(min(batch_size - len(batch.rows), len(queue)))]
            ids, mask = left_pad([encoded[i] for i in take], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = new_cache()
            nxt = forward(ids, mask, pos, cache).argmax(-1)
            running = len(batch.rows)
            batch.add(cache, mask, pos[:, -1:] + 1, nxt, take, [[] for _ in take])
            settle(running)  # only the new rows have a fresh token
            continue
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
        batch.nxt = forward(batch.nxt[:, None], batch.mask, batch.pos, batch.cache).argmax(-1)
        batch.pos = batch.pos + 1
        settle()
