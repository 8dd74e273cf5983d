"""Shared test fixtures: paths to the read-only reference data beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, or skip when the reference data is not beside the repo."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (../shared/data is absent)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file (tests/realmodel.py), or skip when it cannot be fetched."""
    from tests.realmodel import Unavailable, gguf_file

    try:
        return gguf_file()
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path) -> Path:
    """SmolLM2-135M-Instruct converted to safetensors (once per machine, keyed by the GGUF sha256)."""
    from tests.realmodel import converted

    return converted()[1]
