"""Load the questions of a grid's dataset reference (arith with its params, or the registry)."""

from __future__ import annotations

from shared.datasets.base import Question
from shared.specs import DatasetRef


def load_split(ref: DatasetRef, split: str) -> list[Question]:
    """The questions of `split` ("train" or "test") for a grid dataset reference."""
    limit = ref.train_size if split == "train" else ref.test_size
    if ref.name == "arith":
        from shared.datasets.arith import load_arith_split

        return load_arith_split(split, limit=limit, params=ref.arith)
    from shared.datasets.registry import load_questions

    data_file = ref.train_file if split == "train" else ref.test_file
    return load_questions(ref.name, split, data_file=data_file, limit=limit, skip_invalid=ref.skip_invalid)
