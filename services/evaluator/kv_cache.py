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

    def append_rows(self, other: GrowingLayer) -> None:
        """Add `other`'s rows after these, right-aligned: the narrower side is left-padded with zeros.

        The zero columns must be masked out by the caller (continuous batching admits new prompts
        this way: each row keeps its own left padding in the attention mask).
        """
        if getattr(other, "_kbuf", None) is None:
            return
        if getattr(self, "_kbuf", None) is None:
            self.lazy_initialization(other.keys, other.values)
            self._place(other.keys, other.values, 0)
            return
        width = max(self._hi - self._lo, other._hi - other._lo)
        keys = torch.cat([_pad_left(self.keys, width), _pad_left(other.keys, width)])
        values = torch.cat([_pad_left(self.values, width), _pad_left(other.values, width)])
        self._place(keys, values, 0)

    def drop_left(self, n: int) -> None:
        """Forget the `n` oldest columns (padding that no row attends to any more); a view change."""
        if self._kbuf is not None and n > 0:
            self._lo = min(self._hi, self._lo + n)
            self._view()

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


def _pad_left(x: torch.Tensor, width: int) -> torch.Tensor:
    """(batch, heads, t, dim) -> (batch, heads, width, dim), zeros first."""
    extra = width - x.shape[-2]
    return x if extra == 0 else torch.cat([x.new_zeros((*x.shape[:2], extra, x.shape[-1])), x], dim=-2)


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
