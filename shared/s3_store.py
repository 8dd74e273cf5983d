"""S3/MinIO artifact store (minio SDK), with the same key layout as LocalStore.

- `<kind>/<key>/<files...>` then `<kind>/<key>/manifest.json`, uploaded last: an artifact without a
  manifest does not exist, so a crash mid-upload leaves nothing visible (a later publish overwrites
  the orphaned files). Large files go up as multipart uploads (`part_size`).
- `fetch` downloads into a local cache (`<cache_dir>/<bucket>/<kind>/<key>`), checks every file's
  size and sha256 against the manifest, and moves the folder into place only when complete; a
  later fetch of the same published artifact reuses it (sizes re-checked).
- `scratch` is a local folder under the cache (work in progress never goes to S3).
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from minio import Minio
from minio.error import S3Error

from shared.artifacts import KINDS, MANIFEST, ArtifactStore, LocalStore, _check
from shared.keys import file_sha256
from shared.paths import member_path

PART_SIZE = 64 * 1024 * 1024
"""Multipart part size for uploads (files larger than this are uploaded in parts)."""
MISSING = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")


class ArtifactCorrupt(ValueError):
    """A downloaded file does not match the manifest (size or sha256)."""


class S3Store(ArtifactStore):
    """Artifacts in one S3 bucket; a local cache for downloads and scratch work."""

    def __init__(self, client: Minio, bucket: str, cache_dir: str | Path, part_size: int = PART_SIZE) -> None:
        self.client = client
        self.bucket = bucket
        self.cache = Path(cache_dir).expanduser().resolve() / bucket
        self.scratch_root = self.cache / ".work"
        self.part_size = part_size
        self.cache.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Any = None, create_bucket: bool = True) -> S3Store:
        """A store from `COTD_S3_*` settings (credentials from the environment only)."""
        from shared.settings import get_settings

        s = settings or get_settings()
        client = Minio(
            s.s3_endpoint, access_key=s.s3_access_key, secret_key=s.s3_secret_key, secure=s.s3_secure, region=s.s3_region
        )
        store = cls(client, s.s3_bucket, s.cache_dir)
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

    def publish(self, kind: str, key: str, src: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        _check(kind, key)
        existing = self.manifest(kind, key)
        if existing is not None:
            return existing
        src = Path(src)
        full = self.full_manifest(kind, key, src, manifest)
        for f in full["files"]:
            self.client.fput_object(self.bucket, f"{kind}/{key}/{f['path']}", str(src / f["path"]), part_size=self.part_size)
        # Another worker may have published meanwhile (its files are the same content): keep the first.
        existing = self.manifest(kind, key)
        if existing is not None:
            return existing
        self._put_bytes(f"{kind}/{key}/{MANIFEST}", json.dumps(full, indent=2).encode())
        return full

    def fetch(self, kind: str, key: str) -> Path:
        m = self.manifest(kind, key)
        if m is None:
            raise FileNotFoundError(f"artifact {kind}/{key} is not published")
        dest = self.cache / kind / key
        if self._cached_ok(dest, m):
            return dest
        tmp = self.cache / ".tmp" / f"{kind}-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for f in m.get("files", []):
                target = member_path(tmp, f["path"])  # a manifest never writes outside the cache
                self.client.fget_object(self.bucket, f"{kind}/{key}/{f['path']}", str(target))
                size, digest = target.stat().st_size, file_sha256(target)
                if size != f["size"] or digest != f["sha256"]:
                    raise ArtifactCorrupt(
                        f"{kind}/{key}/{f['path']}: sha256 {digest[:12]} / {size} bytes do not match "
                        f"the manifest ({f['sha256'][:12]} / {f['size']} bytes)"
                    )
            (tmp / MANIFEST).write_text(json.dumps(m, indent=2))
            if dest.exists():
                shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(dest)
            except OSError:  # another thread put it in place first
                if not self._cached_ok(dest, m):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    @staticmethod
    def _cached_ok(dest: Path, m: dict[str, Any]) -> bool:
        """A cached copy of this very publication, with every file present at its size."""
        p = dest / MANIFEST
        if not p.exists():
            return False
        try:
            local = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if local.get("published_at") != m.get("published_at") or local.get("files") != m.get("files"):
            return False
        return all((dest / f["path"]).is_file() and (dest / f["path"]).stat().st_size == f["size"] for f in m["files"])

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
        return sorted(o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True))


def open_store(settings=None, root: str | Path | None = None) -> ArtifactStore:
    """The store the settings name (`COTD_STORE=local|s3`), or a local store at `root`."""
    from shared.settings import get_settings

    s = settings or get_settings()
    if root is not None:
        return LocalStore(root)
    if s.store == "s3":
        return S3Store.from_settings(s)
    return LocalStore(s.store_dir)
