"""A KV cache that grows in place, for the evaluator's greedy loops.

transformers' `DynamicLayer` appends each new token with `torch.cat`, copying the whole cache at
every step. `GrowingLayer` keeps keys and values in a buffer with spare columns (doubled when
full), writes each step into it, and hands attention a view of the columns in use: a step costs
what attention costs. Dropping finished rows copies only the columns in use.

Only models whose cache is made of plain full-attention `DynamicLayer`s (Llama, Qwen, BLOOM ...)
get it; `growing_cache` returns None for the others, and callers keep transformers' own cache.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_COLUMNS = 64


class GrowingLayer(DynamicLayer):
    """Keys/values of one layer in a buffer with spare columns; `keys`/`values` view the used ones."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True
        self._kbuf = self._vbuf = None
        self._lo = self._hi = 0  # the columns in use

    def _place(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        """Start a new buffer holding `keys`/`values` and room for `room` more columns."""
        b, h, t, d = keys.shape
        cap = max(2 * (t + room), MIN_COLUMNS)
        self._kbuf = keys.new_empty((b, h, cap, d))
        self._vbuf = values.new_empty((b, h, cap, values.shape[-1]))
        self._kbuf[:, :, :t] = keys
        self._vbuf[:, :, :t] = values
        self._lo, self._hi = 0, t
        self._view()

    def _view(self) -> None:
        self.keys = self._kbuf[:, :, self._lo : self._hi]
        self.values = self._vbuf[:, :, self._lo : self._hi]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the new columns in place (moving to a bigger buffer when full); return the views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q = key_states.shape[-2]
        if self._kbuf is None:
            self._place(key_states, value_states, 0)
            return self.keys, self.values
        if self._hi + q > self._kbuf.shape[-2]:
            self._place(self.keys, self.values, q)
        self._kbuf[:, :, self._hi : self._hi + q] = key_states
        self._vbuf[:, :, self._hi : self._hi + q] = value_states
        self._hi += q
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows at `indices` (only the used columns are copied)."""
        if self._kbuf is not None:
            self._place(self.keys[indices], self.values[indices], 0)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the rows (beam search)."""
        self.batch_select_indices(beam_idx.to(self.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each row `repeats` times."""
        if self._kbuf is not None:
            self._place(self.keys.repeat_interleave(repeats, 0), self.values.repeat_interleave(repeats, 0), 0)

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the newest `-tokens_to_remove` columns (a view change; transformers' sign convention)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if self._kbuf is not None and tokens_to_remove:
            self._hi = max(self._lo, self._hi + tokens_to_remove)
            self._view()


def growing_cache(model) -> DynamicCache | None:
    """A `DynamicCache` of `GrowingLayer`s for `model`, or None when its cache has other layer kinds."""
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a config the cache cannot be built from
        return None
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache
