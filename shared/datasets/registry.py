"""The dataset registry: name -> task type and loaders (a local file or the hub).

```python
from shared.datasets.registry import load_questions, task_type
qs = load_questions("svamp", "test", data_file="../shared/data/test/svamp_test.json")
```

`arith` (the built-in procedural dataset) lives in `shared.datasets.arith` and is imported lazily.
To add a dataset, write a module with `NAME`, `TASK`, `load_from_file(path, split)` and
`load_from_hub(split)`, and add it to `_MODULES`.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from shared.datasets.base import DatasetError, Question, TaskType

_MODULES = {
    "svamp": "shared.datasets.svamp",
    "gsm8k": "shared.datasets.gsm8k",
    "aqua": "shared.datasets.aqua",
    "math": "shared.datasets.math_ds",
    "csqa": "shared.datasets.csqa",
    "openbookqa": "shared.datasets.openbookqa",
    "strategyqa": "shared.datasets.strategyqa",
}
_TASKS = {
    "svamp": TaskType.NUMBER,
    "gsm8k": TaskType.NUMBER,
    "aqua": TaskType.CHOICE,
    "math": TaskType.MATH,
    "csqa": TaskType.CHOICE,
    "openbookqa": TaskType.CHOICE,
    "strategyqa": TaskType.YESNO,
    "arith": TaskType.NUMBER,
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

DATASET_NAMES: tuple[str, ...] = (*_MODULES, "arith")
SOURCES = ("auto", "file", "hub")


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its canonical name, task type and loader module path."""

    name: str
    task: TaskType
    module: str


def canonical_name(name: str) -> str:
    """The registered name for `name` (case-insensitive, with aliases such as ``math500``)."""
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _TASKS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    return key


def task_type(name: str) -> TaskType:
    """How answers of dataset `name` are extracted and graded."""
    return _TASKS[canonical_name(name)]


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for `name`."""
    key = canonical_name(name)
    return DatasetInfo(key, _TASKS[key], _MODULES.get(key, "shared.datasets.arith"))


def _module(key: str) -> ModuleType:
    return importlib.import_module(_MODULES[key])


def _load_arith(split: str, data_file: str | Path | None, limit: int | None) -> list[Question]:
    from shared.datasets.arith import load_arith_split

    params = inspect.signature(load_arith_split).parameters
    kwargs: dict[str, object] = {}
    if data_file is not None:
        if "data_file" not in params:
            raise DatasetError("arith: this version cannot load a data file")
        kwargs["data_file"] = data_file
    if "limit" in params:
        kwargs["limit"] = limit
    return list(load_arith_split(split, **kwargs))


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
    if key == "arith":
        questions = _load_arith(split, data_file if use_file else None, limit)
    elif use_file:
        questions = _module(key).load_from_file(Path(data_file), split, skip_invalid)
    else:
        questions = _module(key).load_from_hub(split)
    return questions[:limit] if limit is not None else questions
