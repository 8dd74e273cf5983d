"""Build a tiny student offline whose tokenizer is trained on the test's own (question, rationale) pairs."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_student(root: Path, pairs: list[tuple[str, str]], size: str = "xs") -> Path:
    """An `init_tiny` student under `root/base`, its BPE trained on `pairs` as an alpaca file."""
    from services.trainer.tiny import init_tiny

    corpus = root / "corpus.json"
    corpus.write_text(json.dumps([{"instruction": q, "output": r} for q, r in pairs]))
    return init_tiny(root / "base", corpus=[str(corpus)], size=size)
