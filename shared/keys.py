"""Content keys: a stable hash of everything that determines an artifact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(payload: Any) -> str:
    """JSON with sorted keys and no whitespace, the same in every process."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def content_key(kind: str, payload: Any) -> str:
    """A 24-hex-digit key for an artifact of `kind` determined by `payload`."""
    return hashlib.sha256(f"{kind}\n{canonical_json(payload)}".encode()).hexdigest()[:24]


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (used to fingerprint local data files in keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
