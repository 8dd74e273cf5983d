"""Padding-free micro-batches: the flattened row gives the padded batch's loss and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.trainer.data import collate, encode_pair
from services.trainer.errors import TrainingError
from services.trainer.loss import ResponseLoss
from services.trainer.packing import (
    PACKABLE_FAMILIES,
    collate_flat,
    flattened_attention,
    plan_padding_free,
)
from services.trainer.recipe import train_sft
from shared.config import TrainingConfig
from tests.unit.tiny_student import tiny_student

torch.set_num_threads(1)

PAIRS = [(f"What is {a} times {b}?", f"{a} * {b} = {a * b}. " * (a % 4 + 1) + f"The answer is {a * b}") for a in range(1, 7) for b in range(2, 5)]  # fmt: skip
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
SMALL |= {"num_key_value_heads": 2, "vocab_size": 64, "head_dim": 8, "max_position_embeddings": 256}
SMALL |= {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_student(tmp_path_factory.mktemp("tiny"), PAIRS)


def random_model(family: str, attn: str = "sdpa", **extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(family, **SMALL, **extra)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)


def random_examples(n: int, seed: int = 0) -> list:
    """Examples of spread lengths, each a masked prompt then a labelled response."""
    from services.trainer.data import IGNORE, Example

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p, r = 3 + 2 * i, 4 + 5 * i
        ids = torch.randint(1, 64, (p + r,), generator=g).tolist()
        out.append(Example(ids, [IGNORE] * p + ids[p:]))
    return out


def loss_and_grads(model, batch: dict, n_label: int, flat: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    with flattened_attention(model, flat):
        loss = ResponseLoss(model)(batch, n_label)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("family", sorted(PACKABLE_FAMILIES))
def test_flattened_row_gives_the_padded_loss_and_gradients(family: str) -> None:
    model = random_model(family)
    assert plan_padding_free("auto", model, 1024)
    examples = random_examples(4)
    n_label = sum(1 for e in examples for t in e.labels[1:] if t != -100)
    padded = loss_and_grads(model, collate(examples, pad_id=0), n_label, flat=False)
    flat = loss_and_grads(model, collate_flat(examples), n_label, flat=True)
    torch.testing.assert_close(flat[0], padded[0], rtol=1e-5, atol=1e-6)
    assert len(flat[1]) == len(padded[1])
    for a, b in zip(flat[1], padded[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert model.config._attn_implementation == "sdpa"  # restored after the block


def test_without_per_example_attention_the_examples_would_mix() -> None:
    """The check above can fail: plain causal attention over the flattened row gives another loss."""
    model = random_model("llama")
    examples = random_examples(4)
    flat = collate_flat(examples)
    proper = loss_and_grads(model, flat, 40, flat=True)[0]
    mixed = loss_and_grads(model, {k: v for k, v in flat.items() if k != "cu_seq_lens"} | {"attention_mask": torch.ones_like(flat["input_ids"])}, 40, flat=False)[0]  # fmt: skip
    assert not torch.allclose(proper, mixed, rtol=1e-5, atol=1e-6)  # the tolerance the check above uses


def test_flat_row_boundaries_and_positions() -> None:
    examples = random_examples(3)
    flat = collate_flat(examples)
    lengths = [len(e.input_ids) for e in examples]
    assert flat["cu_seq_lens"].tolist() == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    assert flat["input_ids"].shape == (1, sum(lengths))
    starts = flat["cu_seq_lens"][:-1].tolist()
    assert [flat["position_ids"][0, s].item() for s in starts] == [0, 0, 0]
    assert all(flat["labels"][0, s].item() == -100 for s in starts)  # no label crosses a boundary
    from services.trainer.data import Example

    labelled = collate_flat([Example([5, 6], [5, 6]), Example([7, 8], [7, 8])])  # no masked prompt
    assert labelled["labels"].tolist() == [[-100, 6, -100, 8]]


def test_families_without_it_train_padded_or_refuse() -> None:
    bloom = random_model("bloom", attn="eager", n_head=4, n_layer=2)
    assert not plan_padding_free("auto", bloom, 1024)
    with pytest.raises(TrainingError, match="padding_free on: the bloom family"):
        plan_padding_free("on", bloom, 1024)
    windowed = random_model("mistral", sliding_window=64)
    assert not plan_padding_free("auto", windowed, 1024)  # a window shorter than the cutoff
    assert plan_padding_free("auto", windowed, 64)
    assert not plan_padding_free("off", random_model("llama"), 1024)


def test_training_padding_free_matches_padded_training(base: Path, tmp_path: Path) -> None:
    cfg = {"lr": 3e-3, "max_steps": 3, "global_batch_size": 8, "micro_batch_size": 4, "precision": "fp32"}
    flat = train_sft(str(base), PAIRS, tmp_path / "a", tmp_path / "wa", TrainingConfig(**cfg), seed=5)
    padded = train_sft(
        str(base), PAIRS, tmp_path / "b", tmp_path / "wb", TrainingConfig(**cfg, padding_free="off"), seed=5
    )
    assert flat["padding_free"] and not padded["padding_free"]
    assert flat["padding_fraction"] == 0 and padded["padding_fraction"] > 0.05
    torch.testing.assert_close(
        torch.tensor(flat["losses"]), torch.tensor(padded["losses"]), rtol=1e-4, atol=1e-5
    )
    info = (tmp_path / "a" / "cotd_checkpoint.json").read_text()
    assert '"attn_implementation": "sdpa"' in info  # the saved model runs its own attention again


def test_flat_examples_encode_like_the_trainer(base: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    examples = [encode_pair(tok, "auto", q, r, 4096) for q, r in PAIRS[:4]]
    flat = collate_flat(examples)
    assert all(e.labels[0] == -100 for e in examples)
    assert flat["labels"][0].ne(-100).sum() == sum(1 for e in examples for t in e.labels if t != -100)
