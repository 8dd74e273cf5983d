"""The declaration tables hold what they promise: every writer and loader named there exists."""

from __future__ import annotations

import importlib
import typing

from shared.config import Template
from shared.datasets.registry import DATASETS, dataset_module
from shared.teacher_kinds import TEACHER_KINDS
from shared.templates import TEMPLATES


def test_every_teacher_kind_names_a_writer_that_exists() -> None:
    for kind, traits in TEACHER_KINDS.items():
        module, func = traits.writer.split(":")
        assert callable(getattr(importlib.import_module(module), func)), kind


def test_every_dataset_module_has_its_loaders() -> None:
    for name, entry in DATASETS.items():
        mod = dataset_module(name)
        wanted = ("generate",) if entry.generated else ("load_from_file", "load_from_hub")
        assert all(callable(getattr(mod, f, None)) for f in wanted), name
        assert getattr(mod, "TASK", entry.task) == entry.task, name


def test_templates_are_the_config_choices() -> None:
    assert typing.get_args(Template) == ("auto", *TEMPLATES)
