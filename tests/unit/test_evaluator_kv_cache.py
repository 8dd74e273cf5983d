"""The in-place KV cache gives the same logits as transformers' DynamicCache, through growth and row drops."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM
from transformers.cache_utils import DynamicLayer

from services.evaluator.kv_cache import MIN_COLUMNS, GrowingLayer, growing_cache

SMALL = dict(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)  # fmt: skip


def _decode(model, cache, ids: torch.Tensor, mask: torch.Tensor, steps: int, drop_at: int) -> list[torch.Tensor]:
    """Greedy steps from a left-padded prompt; row 1 is dropped at step `drop_at`. Logits per step."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, out = ids, []
    for step in range(steps):
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                       logits_to_keep=1).logits[:, -1]  # fmt: skip
        out.append(logits)
        nxt = logits.argmax(-1)
        if step == drop_at:
            keep = torch.tensor([0, 2])
            cache.batch_select_indices(keep)
            mask, pos, nxt = mask[keep], pos[keep], nxt[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        pos = pos[:, -1:] + 1
        step_ids = nxt[:, None]
    return out


@torch.inference_mode()
def test_same_logits_as_dynamic_cache_through_growth_and_drops() -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    ids = torch.randint(3, 60, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    mask[2, :2] = 0
    steps = MIN_COLUMNS + 20  # past the first buffer: the cache must move to a bigger one
    cache = growing_cache(model)
    assert cache is not None and all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    ours = _decode(model, cache, ids, mask, steps, drop_at=30)
    ref = _decode(model, DynamicCache(config=model.config), ids, mask, steps, drop_at=30)
    assert len(ours) == len(ref) == steps
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert torch.equal(a.argmax(-1), b.argmax(-1))
    layer = cache.layers[0]
    assert layer.keys.shape[0] == 2 and layer.keys.shape[2] == 9 + steps - 1  # rows kept, columns in use
    assert layer._kbuf.shape[2] > layer.keys.shape[2]  # spare columns: the next step writes in place

    ref_layer = DynamicLayer()
    ref_layer.update(layer.keys.clone(), layer.values.clone())
    for each in (layer, ref_layer):  # beam search and assisted decoding: same as transformers' layer
        each.crop(-3)
        each.batch_repeat_interleave(2)
        each.reorder_cache(torch.tensor([3, 0, 2, 1]))
    assert torch.equal(layer.keys, ref_layer.keys) and torch.equal(layer.values, ref_layer.values)
    assert layer.keys.shape[:3] == (4, layer.keys.shape[1], 9 + steps - 4)
    with pytest.raises(ValueError):
        layer.crop(2)


def test_models_with_sliding_window_layers_keep_transformers_cache() -> None:
    model = MistralForCausalLM(MistralConfig(**SMALL, sliding_window=8))
    assert growing_cache(model) is None
