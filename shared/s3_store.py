"""S3/MinIO artifact store (minio SDK), with the same key layout as LocalStore.

- Publishing cannot interleave. Each publication uploads its files under a prefix of its own,
  `<kind>/<key>/<publication>/<files...>`, then commits `<kind>/<key>/manifest.json` with
  `If-None-Match: *`: of two workers that built the same artifact (a frozen lease holder woken
  up, two trainers sharing a cache), the first commit wins and the loser deletes its own files.
  The manifest names its publication, so its sha256s always describe the stored objects. An
  artifact without a manifest does not exist, so a crash mid-upload leaves nothing visible.
  Manifests written before publications existed (no `publication` field) name
  `<kind>/<key>/<files...>` and are still read. Large files go up as multipart uploads.
- Files go up with a content type from their extension (JSON, JSONL, text; octet-stream else).
- `fetch` downloads into a local cache (`<cache_dir>/<bucket>/<kind>/<key>`), checks every file's
  size and sha256 against the manifest, and moves the folder into place only when complete. A
  cached copy is reused only when every file still has its sha256. A download that does not match
  the manifest means the bucket holds a corrupt artifact: its manifest is moved to
  `quarantine/<kind>/<key>/<publication>.json`, so the artifact no longer exists and the next
  grid that needs it builds it again (`ArtifactCorrupt` says so).
- `scratch` is a local folder under the cache (work in progress never goes to S3).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from minio import Minio
from minio.error import S3Error

from shared.artifacts import KINDS, MANIFEST, ArtifactStore, LocalStore, _check
from shared.keys import file_sha256
from shared.paths import member_path, place_folder

PART_SIZE = 64 * 1024 * 1024
"""Multipart part size for uploads (files larger than this are uploaded in parts)."""
MISSING = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")
EVICT_GRACE_S = 600.0
"""A cached artifact fetched less than this long ago is never evicted."""


CONTENT_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
}
"""Content types by file extension; anything else (safetensors, tokenizer models) is octet-stream."""


def content_type(path: str) -> str:
    """The content type an artifact file is uploaded with."""
    return CONTENT_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


class ArtifactCorrupt(ValueError):
    """A downloaded file does not match the manifest (size or sha256); the artifact was quarantined."""


class S3Store(ArtifactStore):
    """Artifacts in one S3 bucket; a local cache for downloads and scratch work."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        cache_dir: str | Path,
        part_size: int = PART_SIZE,
        cache_max_bytes: int = 0,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.cache = Path(cache_dir).expanduser().resolve() / bucket
        self.scratch_root = self.cache / ".work"
        self.part_size = part_size
        self.cache_max_bytes = cache_max_bytes
        """After each download the cache is evicted down to this size (0: no limit)."""
        self.cache.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Any = None, create_bucket: bool = True) -> S3Store:
        """A store from `COTD_S3_*` settings (credentials from the environment only)."""
        from shared.settings import get_settings

        s = settings or get_settings()
        client = Minio(
            s.s3_endpoint,
            access_key=s.s3_access_key,
            secret_key=s.s3_secret_key,
            secure=s.s3_secure,
            region=s.s3_region,
        )
        store = cls(client, s.s3_bucket, s.cache_dir, cache_max_bytes=int(s.cache_max_gb * 1e9))
        if create_bucket:
            store.ensure_bucket()
        return store

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (a race with another worker is fine)."""
        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as e:
            if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # ------------------------------------------------------------------ objects
    def _get_bytes(self, name: str) -> bytes | None:
        try:
            resp = self.client.get_object(self.bucket, name)
        except S3Error as e:
            if e.code in MISSING:
                return None
            raise
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def _put_bytes(self, name: str, data: bytes, content_type: str = "application/json") -> None:
        self.client.put_object(self.bucket, name, io.BytesIO(data), len(data), content_type=content_type)

    # ------------------------------------------------------------------ ArtifactStore
    def manifest(self, kind: str, key: str) -> dict[str, Any] | None:
        _check(kind, key)
        raw = self._get_bytes(f"{kind}/{key}/{MANIFEST}")
        return json.loads(raw) if raw is not None else None

    @staticmethod
    def object_name(kind: str, key: str, manifest: dict[str, Any], path: str) -> str:
        """Where a file of this publication is stored."""
        pub = manifest.get("publication")
        return f"{kind}/{key}/{pub}/{path}" if pub else f"{kind}/{key}/{path}"

    def artifact_objects(self, kind: str, key: str, manifest: dict[str, Any]) -> list[str]:
        """Every object a published artifact consists of: its files and its manifest (sorted)."""
        names = [self.object_name(kind, key, manifest, f["path"]) for f in manifest["files"]]
        return sorted([*names, f"{kind}/{key}/{MANIFEST}"])

    def publish(self, kind: str, key: str, src: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        _check(kind, key)
        existing = self.manifest(kind, key)
        if existing is not None:
            return existing
        src = Path(src)
        full = self.full_manifest(kind, key, src, manifest) | {"publication": f"pub-{uuid.uuid4().hex[:16]}"}
        uploaded: list[str] = []
        try:
            for f in full["files"]:
                name = self.object_name(kind, key, full, f["path"])
                uploaded.append(name)
                self.client.fput_object(
                    self.bucket,
                    name,
                    str(src / f["path"]),
                    content_type=content_type(f["path"]),
                    part_size=self.part_size,
                )
            committed = self._put_if_absent(f"{kind}/{key}/{MANIFEST}", json.dumps(full, indent=2).encode())
        except BaseException:
            self._remove_quietly(uploaded)  # nothing of a failed publication stays behind
            raise
        if committed:
            return full
        self._remove_quietly(uploaded)  # another worker committed first: its publication stands
        return self.manifest(kind, key) or full

    def _put_if_absent(self, name: str, data: bytes) -> bool:
        """PutObject with `If-None-Match: *`; False when the object already exists.

        The minio SDK has no public parameter for the precondition, so this calls its PutObject
        request (`_put_object`) with the header; S3, MinIO and moto answer 412 PreconditionFailed.
        """
        headers = {"Content-Type": "application/json", "If-None-Match": "*"}
        try:
            self.client._put_object(self.bucket, name, data, headers)
        except S3Error as e:
            if e.code == "PreconditionFailed" or e.response.status == 412:
                return False
            raise
        return True

    def _remove_quietly(self, names: list[str]) -> None:
        for name in names:
            try:
                self.client.remove_object(self.bucket, name)
            except Exception:  # best effort: an orphan under a publication prefix is never read
                pass

    def fetch(self, kind: str, key: str) -> Path:
        m = self.manifest(kind, key)
        if m is None:
            raise FileNotFoundError(f"artifact {kind}/{key} is not published")
        dest = self.cache / kind / key
        if self._cached_ok(dest, m):
            os.utime(dest / MANIFEST)  # its last use, for the LRU eviction
            return dest
        tmp = self.cache / ".tmp" / f"{kind}-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for f in m.get("files", []):
                target = member_path(tmp, f["path"])  # a manifest never writes outside the cache
                self.client.fget_object(self.bucket, self.object_name(kind, key, m, f["path"]), str(target))
                size, digest = target.stat().st_size, file_sha256(target)
                if size != f["size"] or digest != f["sha256"]:
                    where = self.quarantine(kind, key, m)
                    raise ArtifactCorrupt(
                        f"{kind}/{key}/{f['path']}: sha256 {digest[:12]} / {size} bytes do not match "
                        f"the manifest ({f['sha256'][:12]} / {f['size']} bytes); quarantined as {where}, "
                        "the next grid that needs it builds it again"
                    )
            (tmp / MANIFEST).write_text(json.dumps(m, indent=2))
            # workers sharing this cache may fetch it at once: a copy of this very publication
            # already in place is kept (someone may be reading it), a stale one moved aside
            place_folder(tmp, dest, keep=lambda: self._cached_ok(dest, m))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if self.cache_max_bytes:
            self.evict(self.cache_max_bytes)
        return dest

    def evict(self, max_bytes: int, grace_s: float = EVICT_GRACE_S) -> list[str]:
        """Remove the least recently used cached artifacts until the cache holds at most `max_bytes`.

        An artifact fetched in the last `grace_s` seconds is kept (a task is about to read it), and
        scratch work (`.work`) is never touched. Returns the `kind/key` of what was removed.
        """
        entries = []
        for kind in KINDS:
            for d in (self.cache / kind).glob("*"):
                if (d / MANIFEST).is_file():
                    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                    entries.append(((d / MANIFEST).stat().st_mtime, size, d))
        total = sum(size for _, size, _ in entries)
        removed, now = [], time.time()
        for used, size, d in sorted(entries, key=lambda e: e[0]):
            if total <= max_bytes:
                break
            if now - used < grace_s:
                continue
            shutil.rmtree(d, ignore_errors=True)
            total -= size
            removed.append(f"{d.parent.name}/{d.name}")
        return removed

    def quarantine(self, kind: str, key: str, manifest: dict[str, Any]) -> str:
        """Unpublish a corrupt artifact: its manifest moves to `quarantine/`, its files are removed."""
        pub = manifest.get("publication") or f"legacy-{int(manifest.get('published_at', 0))}"
        where = f"quarantine/{kind}/{key}/{pub}.json"
        self._put_bytes(where, json.dumps(manifest, indent=2).encode())
        current = self.manifest(kind, key)
        if current is not None and current.get("publication") == manifest.get("publication"):
            self.client.remove_object(self.bucket, f"{kind}/{key}/{MANIFEST}")
            self._remove_quietly(
                [self.object_name(kind, key, manifest, f["path"]) for f in manifest["files"]]
            )
        return where

    @staticmethod
    def _cached_ok(dest: Path, m: dict[str, Any]) -> bool:
        """A cached copy of this very publication, with every file present and its sha256 intact."""
        p = dest / MANIFEST
        if not p.exists():
            return False
        try:
            local = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if local.get("published_at") != m.get("published_at") or local.get("files") != m.get("files"):
            return False
        for f in m["files"]:
            path = dest / f["path"]
            if not path.is_file() or path.stat().st_size != f["size"] or file_sha256(path) != f["sha256"]:
                return False
        return True

    def put_json(self, path: str, obj: Any) -> None:
        self._put_bytes(path.lstrip("/"), json.dumps(obj, indent=2, default=str).encode())

    def get_json(self, path: str) -> Any | None:
        raw = self._get_bytes(path.lstrip("/"))
        return json.loads(raw) if raw is not None else None

    def keys(self, kind: str) -> list[str]:
        if kind not in KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        out = []
        for obj in self.client.list_objects(self.bucket, prefix=f"{kind}/", recursive=True):
            parts = obj.object_name.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST:
                out.append(parts[1])
        return sorted(out)

    def object_names(self, prefix: str = "") -> list[str]:
        """Every object name under `prefix` (for inspection and tests)."""
        return sorted(
            o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
        )


def open_store(settings=None, root: str | Path | None = None) -> ArtifactStore:
    """The store the settings name (`COTD_STORE=local|s3`), or a local store at `root`."""
    from shared.settings import get_settings

    s = settings or get_settings()
    if root is not None:
        return LocalStore(root)
    if s.store == "s3":
        return S3Store.from_settings(s)
    return LocalStore(s.store_dir)
