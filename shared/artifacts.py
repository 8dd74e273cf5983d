"""The artifact store: content-keyed folders, published atomically (data first, manifest last).

Layout (the same for every backend): `<kind>/<key>/<files...>` plus `<kind>/<key>/manifest.json`.
An artifact without a manifest does not exist. Kinds: cotsets, checkpoints, evals, models, grids.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from shared.keys import file_sha256
from shared.paths import place_folder

MANIFEST = "manifest.json"
KINDS = ("cotsets", "checkpoints", "evals", "models", "grids")


def _check(kind: str, key: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"invalid artifact key {key!r}")


def file_listing(src: Path) -> list[dict[str, Any]]:
    """Every file under `src` with its size and sha256 (recorded in the manifest)."""
    out = []
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out.append({"path": p.relative_to(src).as_posix(), "size": p.stat().st_size, "sha256": file_sha256(p)})
    return out


class ArtifactStore(ABC):
    """Where artifacts live. `scratch` is a local folder for resumable work in progress."""

    @abstractmethod
    def manifest(self, kind: str, key: str) -> dict[str, Any] | None:
        """The manifest of a published artifact, or None."""

    @abstractmethod
    def publish(self, kind: str, key: str, src: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        """Publish the files of `src` under kind/key, then the manifest. Idempotent."""

    @abstractmethod
    def fetch(self, kind: str, key: str) -> Path:
        """A local folder holding the artifact's files (read it, do not write it)."""

    scratch_root: Path
    """Local folder holding work in progress, `<scratch_root>/<kind>/<key>/`."""

    def scratch(self, kind: str, key: str) -> Path:
        """A local working folder for building the artifact (kept across crashes)."""
        _check(kind, key)
        p = self.scratch_root / kind / key
        p.mkdir(parents=True, exist_ok=True)
        return p

    def evict(self, max_bytes: int) -> list[str]:
        """Shrink a local cache of downloads to `max_bytes` (stores without one have nothing to evict)."""
        return []

    @abstractmethod
    def put_json(self, path: str, obj: Any) -> None:
        """Write a small JSON document (grid records) at a relative path."""

    @abstractmethod
    def get_json(self, path: str) -> Any | None:
        """Read a JSON document written by put_json, or None."""

    @abstractmethod
    def keys(self, kind: str) -> list[str]:
        """Published keys of a kind."""

    def exists(self, kind: str, key: str) -> bool:
        """Whether kind/key is published (its manifest exists)."""
        return self.manifest(kind, key) is not None

    @staticmethod
    def full_manifest(kind: str, key: str, src: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        """The manifest as published: the caller's fields plus kind, key, time and the file list."""
        return {**manifest, "kind": kind, "key": key, "published_at": time.time(), "files": file_listing(src)}


class LocalStore(ArtifactStore):
    """Artifacts in a local folder; publishing renames a complete temporary folder into place."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.scratch_root = self.root / ".work"

    def path(self, kind: str, key: str) -> Path:
        """The folder of kind/key (published or not)."""
        _check(kind, key)
        return self.root / kind / key

    def manifest(self, kind: str, key: str) -> dict[str, Any] | None:
        p = self.path(kind, key) / MANIFEST
        return json.loads(p.read_text()) if p.exists() else None

    def publish(self, kind: str, key: str, src: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        existing = self.manifest(kind, key)
        if existing is not None:
            return existing
        tmp = self.root / ".tmp" / f"{kind}-{key}-{uuid.uuid4().hex[:8]}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(src, tmp)
            full = self.full_manifest(kind, key, tmp, manifest)
            (tmp / MANIFEST).write_text(json.dumps(full, indent=2))
        except BaseException:  # a full disk, say: leave nothing half-copied behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        dest = self.path(kind, key)
        # a folder without a manifest (left by an older version) is moved aside and removed; one
        # holding a manifest is a publication that landed meanwhile, and is never deleted
        placed = place_folder(
            tmp,
            dest,
            keep=lambda: self.manifest(kind, key) is not None,
            drop_aside=lambda aside: not (aside / MANIFEST).exists(),
        )
        return full if placed else self.manifest(kind, key)

    def fetch(self, kind: str, key: str) -> Path:
        if not self.exists(kind, key):
            raise FileNotFoundError(f"artifact {kind}/{key} is not published")
        return self.path(kind, key)

    def put_json(self, path: str, obj: Any) -> None:
        dest = self.root / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f".{uuid.uuid4().hex[:6]}.tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=str))
        os.replace(tmp, dest)

    def get_json(self, path: str) -> Any | None:
        p = self.root / path
        return json.loads(p.read_text()) if p.exists() else None

    def keys(self, kind: str) -> list[str]:
        d = self.root / kind
        return sorted(p.name for p in d.iterdir() if (p / MANIFEST).exists()) if d.exists() else []
