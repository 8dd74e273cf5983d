"""The dataset registry: name -> task type and loaders (a local file or the hub).

```python
from shared.datasets.registry import load_questions, task_type
qs = load_questions("svamp", "test", data_file="../shared/data/test/svamp_test.json")
```

Each dataset is one entry of `DATASETS` (its module and task type); modules are imported lazily.
To add a dataset, write a module with `NAME`, `load_from_file(path, split, skip_invalid)` and
`load_from_hub(split)` (taking its task type from `DATASETS`), and add its entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from shared.datasets.base import DatasetError, Question, TaskType


@dataclass(frozen=True)
class Dataset:
    """A dataset: the module with its loaders, and how its answers are extracted and graded.

    The module has `load_from_file(path, split, skip_invalid)` and `load_from_hub(split)`; a
    generated dataset (arith) has `generate(split, limit, params)` instead.
    """

    module: str
    task: TaskType
    generated: bool = False


DATASETS: dict[str, Dataset] = {
    "svamp": Dataset("shared.datasets.svamp", TaskType.NUMBER),
    "gsm8k": Dataset("shared.datasets.gsm8k", TaskType.NUMBER),
    "aqua": Dataset("shared.datasets.aqua", TaskType.CHOICE),
    "math": Dataset("shared.datasets.math_ds", TaskType.MATH),
    "csqa": Dataset("shared.datasets.csqa", TaskType.CHOICE),
    "openbookqa": Dataset("shared.datasets.openbookqa", TaskType.CHOICE),
    "strategyqa": Dataset("shared.datasets.strategyqa", TaskType.YESNO),
    "arith": Dataset("shared.datasets.arith", TaskType.NUMBER, generated=True),
}

_ALIASES = {
    "gsm": "gsm8k",
    "aqua_rat": "aqua",
    "math500": "math",
    "commonsenseqa": "csqa",
    "commonsense_qa": "csqa",
    "obqa": "openbookqa",
    "stqa": "strategyqa",
}

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
SOURCES = ("auto", "file", "hub")


def canonical_name(name: str) -> str:
    """The registered name for `name` (case-insensitive, with aliases such as ``math500``)."""
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    return key


def task_type(name: str) -> TaskType:
    """How answers of dataset `name` are extracted and graded."""
    return DATASETS[canonical_name(name)].task


def dataset_module(name: str) -> ModuleType:
    """The module of dataset `name`, with its loaders."""
    return importlib.import_module(DATASETS[canonical_name(name)].module)


def load_questions(
    name: str,
    split: str = "test",
    data_file: str | Path | None = None,
    limit: int | None = None,
    source: str = "auto",
    skip_invalid: bool = False,
) -> list[Question]:
    """Load a dataset split as `Question`s.

    `source`: ``auto`` reads `data_file` when given and the hub otherwise; ``file`` requires
    `data_file`; ``hub`` ignores it. A local file's format is detected from its fields (raw dataset
    files, the paper's alpaca files, its evaluation files). `limit` keeps the first items.
    Malformed items raise `DatasetError` naming the file, line/index and field; with
    `skip_invalid` a local file's malformed items are logged and skipped instead.
    """
    if source not in SOURCES:
        raise DatasetError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    key = canonical_name(name)
    if source == "file" and data_file is None:
        raise DatasetError(f"{key}: source 'file' needs a data file")
    use_file = data_file is not None and source != "hub"
    module = dataset_module(key)
    if DATASETS[key].generated:
        if use_file:
            raise DatasetError(f"{key}: a generated dataset cannot load a data file")
        questions = module.generate(split, limit)
    elif use_file:
        questions = module.load_from_file(Path(data_file), split, skip_invalid)
    else:
        questions = module.load_from_hub(split)
    return questions[:limit] if limit is not None else questions
