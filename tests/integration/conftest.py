"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """An `init_tiny` xs model (1,024 positions, its own chat template), built once per session."""
    import torch

    from services.trainer.tiny import init_tiny

    torch.set_num_threads(1)
    return init_tiny(tmp_path_factory.mktemp("tiny-teacher") / "m", size="xs")


@pytest.fixture(scope="module")
def teacher_url(tiny_teacher: Path):
    """`cotd teacher serve` over the tiny model, one per test module; yields its root URL."""
    from tests.integration.teacher_server import teacher_server

    with teacher_server(tiny_teacher, "--batch-wait-ms", "20") as (url, _proc):
        yield url
