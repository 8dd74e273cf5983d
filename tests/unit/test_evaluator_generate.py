"""Batched generation: ordering, padding, stop strings, and equality with one-at-a-time decoding."""

from __future__ import annotations

import pytest
import torch

from services.evaluator.evaluate import load_for_inference
from services.evaluator.generate import (
    Generation,
    batch_order,
    cut_at_stop,
    finish,
    generate_batched,
    left_pad,
)
from services.trainer.templates import encode_prompt, end_token, render_prompt
from tests.unit.evaluator_student import arith_questions, tiny_student

torch.set_num_threads(1)


def test_batch_order_sorts_longest_first_and_keeps_ties_stable() -> None:
    assert batch_order([3, 5, 1, 5, 2], 2) == [[1, 3], [0, 4], [2]]
    assert batch_order([3, 5, 1, 5, 2], 2, sort_by_length=False) == [[0, 1], [2, 3], [4]]
    assert batch_order([], 4) == []
    with pytest.raises(ValueError):
        batch_order([1], 0)


def test_left_pad_puts_padding_on_the_left() -> None:
    ids, mask = left_pad([[7, 8, 9], [5]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_cut_at_stop_uses_the_earliest_stop() -> None:
    assert cut_at_stop("a. The answer is 3.\nQ: next", ["\nQ:", "answer"]) == "a. The "
    assert cut_at_stop("no stop here", ["\n\n", ""]) == "no stop here"


class _CharTokenizer:
    """Decodes ids as characters (0 = a special token)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i or not skip_special_tokens)


def test_finish_cuts_at_the_end_token_then_at_a_stop_string() -> None:
    ids = [ord(c) for c in " 1 + 2 = 3. STOP more"] + [1, ord("x")]
    g = finish(_CharTokenizer(), ids, end_token_ids=[1], stop=["STOP"])
    assert g == Generation("1 + 2 = 3.", len(ids) - 2)
    assert finish(_CharTokenizer(), [ord("a"), ord("b")], [1], []) == Generation("ab", 2)


@pytest.fixture(scope="module")
def student():
    model, tok = load_for_inference(tiny_student(), torch.device("cpu"))
    qs = arith_questions(12)
    prompts = [render_prompt("auto", tok, q.text) for q in qs]
    return model, tok, prompts, [tok.convert_tokens_to_ids(end_token("auto", tok))]


def _one_generate_call_per_prompt(model, tok, prompts: list[str], max_new: int, end: list[int], stop=None):
    """The plain way: `model.generate` for each prompt alone (greedy)."""
    gens = []
    for p in prompts:
        ids = torch.tensor([encode_prompt(tok, p)])  # as the trainer encodes it (BOS first)
        kw = {"stop_strings": stop, "tokenizer": tok} if stop else {}
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
            eos_token_id=end, pad_token_id=tok.pad_token_id, **kw,
        )  # fmt: skip
        gens.append(finish(tok, out[0, ids.shape[1] :].tolist(), end, stop or []))
    return gens


def test_batched_equals_one_at_a_time_and_sorted_equals_unsorted(student) -> None:
    model, tok, prompts, end = student
    one = _one_generate_call_per_prompt(model, tok, prompts, 48, end)
    assert generate_batched(model, tok, prompts, 1, 48, end, sort_by_length=False) == one
    batched = generate_batched(model, tok, prompts, 5, 48, end)
    unsorted = generate_batched(model, tok, prompts, 5, 48, end, sort_by_length=False)
    assert batched == one
    assert unsorted == one
    assert all("The answer is" in g.text for g in one), "the trained student should write rationales"
    lengths = [g.n_tokens for g in one]
    assert max(lengths) > min(lengths), "outputs of different lengths are needed to test per-sequence stops"
    assert all(0 < n < 48 for n in lengths), "each sequence stops at its own end token"


def test_on_batch_reports_each_batch_in_sorted_order(student) -> None:
    model, tok, prompts, end = student
    seen: list[list[int]] = []
    gens = generate_batched(model, tok, prompts, 5, 8, end, on_batch=lambda idx, g: seen.append(idx))
    lengths = [len(encode_prompt(tok, p)) for p in prompts]
    assert seen == batch_order(lengths, 5)
    assert len(gens) == len(prompts)
    assert generate_batched(model, tok, [], 5, 8, end) == []


def test_stop_strings_cut_outputs(student) -> None:
    model, tok, prompts, end = student
    full = generate_batched(model, tok, prompts[:4], 4, 48, end)
    cut = generate_batched(model, tok, prompts[:4], 4, 48, end, stop=[". "])
    assert cut == _one_generate_call_per_prompt(model, tok, prompts[:4], 48, end, stop=[". "])
    for f, c in zip(full, cut, strict=True):
        assert ". " not in c.text
        assert f.text.startswith(c.text)
        assert c.n_tokens <= f.n_tokens
    assert any(c.n_tokens < f.n_tokens for f, c in zip(full, cut, strict=True)), (
        "generation stops at the stop string"
    )


def test_beam_search_runs(student) -> None:
    model, tok, prompts, end = student
    beams = generate_batched(model, tok, prompts[:4], 4, 32, end, num_beams=3)
    assert len(beams) == 4 and all(isinstance(g, Generation) for g in beams)
    assert all(g.text and 0 < g.n_tokens <= 32 for g in beams)
    stopped = generate_batched(model, tok, prompts[:4], 4, 32, end, stop=[". "], num_beams=2)
    assert all(". " not in g.text for g in stopped)
