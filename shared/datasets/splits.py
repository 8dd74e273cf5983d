"""Load the questions of a grid's dataset reference (a generated one with its params, or the registry)."""

from __future__ import annotations

from shared.datasets.base import Question
from shared.datasets.registry import DATASETS, dataset_module, load_questions
from shared.specs import DatasetRef


def load_split(ref: DatasetRef, split: str) -> list[Question]:
    """The questions of `split` ("train" or "test") for a grid dataset reference."""
    limit = ref.train_size if split == "train" else ref.test_size
    if DATASETS[ref.name].generated:
        return dataset_module(ref.name).generate(split, limit, ref.arith)

    data_file = ref.train_file if split == "train" else ref.test_file
    return load_questions(ref.name, split, data_file=data_file, limit=limit, skip_invalid=ref.skip_invalid)
