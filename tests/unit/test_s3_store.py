"""S3Store against a real S3 protocol server (moto's), started on loopback for this module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.services import S3_KEY, S3_SECRET, moto_server, scratch_dir

BUCKET = "cotd-unit"


@pytest.fixture(scope="module")
def endpoint():
    with scratch_dir("cotd-s3-") as root, moto_server(root) as ep:
        yield ep


@pytest.fixture
def store(endpoint, tmp_path):
    from shared.s3_store import S3Store
    from shared.settings import Settings

    s = Settings(
        store="s3", s3_endpoint=endpoint, s3_access_key=S3_KEY, s3_secret_key=S3_SECRET, s3_bucket=BUCKET, cache_dir=str(tmp_path / "cache")
    )
    st = S3Store.from_settings(s)
    for name in st.object_names():
        st.client.remove_object(BUCKET, name)
    return st


def _src(tmp_path: Path, files: dict[str, bytes]) -> Path:
    src = tmp_path / "src"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    return src


def test_publish_then_fetch(store, tmp_path):
    src = _src(tmp_path, {"cot.jsonl": b'{"id": 1}\n', "sub/x.bin": b"\x00\x01"})
    m = store.publish("cotsets", "k1", src, {"teacher": "t"})
    assert m["teacher"] == "t" and {f["path"] for f in m["files"]} == {"cot.jsonl", "sub/x.bin"}
    assert store.exists("cotsets", "k1") and store.keys("cotsets") == ["k1"]
    assert store.object_names("cotsets/k1/") == ["cotsets/k1/cot.jsonl", "cotsets/k1/manifest.json", "cotsets/k1/sub/x.bin"]
    d = store.fetch("cotsets", "k1")
    assert (d / "cot.jsonl").read_bytes() == b'{"id": 1}\n' and (d / "sub/x.bin").read_bytes() == b"\x00\x01"
    # publishing again is a no-op returning the first manifest
    assert store.publish("cotsets", "k1", _src(tmp_path / "o", {"other": b"y"}), {})["published_at"] == m["published_at"]


def test_no_manifest_means_not_existing(store, tmp_path):
    """A crash after the data and before the manifest leaves nothing visible."""
    store.client.put_object(BUCKET, "checkpoints/half/model.safetensors", _bytes(b"w" * 10), 10)
    assert store.manifest("checkpoints", "half") is None
    assert not store.exists("checkpoints", "half")
    assert store.keys("checkpoints") == []
    with pytest.raises(FileNotFoundError):
        store.fetch("checkpoints", "half")
    # a later publish of the same key completes it
    store.publish("checkpoints", "half", _src(tmp_path, {"model.safetensors": b"full"}), {})
    assert (store.fetch("checkpoints", "half") / "model.safetensors").read_bytes() == b"full"


def test_manifest_is_uploaded_last(store, tmp_path, monkeypatch):
    order: list[str] = []
    real_fput, real_put = store.client.fput_object, store.client.put_object
    monkeypatch.setattr(store.client, "fput_object", lambda b, name, *a, **k: (order.append(name), real_fput(b, name, *a, **k))[1])
    monkeypatch.setattr(store.client, "put_object", lambda b, name, *a, **k: (order.append(name), real_put(b, name, *a, **k))[1])
    store.publish("evals", "e1", _src(tmp_path, {"a": b"1", "b": b"2", "c": b"3"}), {})
    uploads = list(dict.fromkeys(order))  # fput_object goes through put_object
    assert uploads == ["evals/e1/a", "evals/e1/b", "evals/e1/c", "evals/e1/manifest.json"]


def test_crash_mid_upload_leaves_nothing(store, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = store.client.fput_object

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("S3 went away")
        return real(*a, **k)

    monkeypatch.setattr(store.client, "fput_object", flaky)
    with pytest.raises(ConnectionError):
        store.publish("checkpoints", "c1", _src(tmp_path, {"a": b"1", "b": b"2"}), {})
    assert not store.exists("checkpoints", "c1") and store.keys("checkpoints") == []


def test_large_file_is_uploaded_in_parts(store, tmp_path):
    store.part_size = 5 * 1024 * 1024  # the S3 minimum
    data = os.urandom(11 * 1024 * 1024 + 7)
    store.publish("checkpoints", "big", _src(tmp_path, {"model.safetensors": data}), {})
    etag = store.client.stat_object(BUCKET, "checkpoints/big/model.safetensors").etag.strip('"')
    assert etag.endswith("-3")  # an S3 multipart ETag: <md5 of part md5s>-<parts>
    assert (store.fetch("checkpoints", "big") / "model.safetensors").read_bytes() == data


def test_fetch_reuses_the_cache(store, tmp_path, monkeypatch):
    store.publish("models", "m1", _src(tmp_path, {"w": b"weights"}), {})
    first = store.fetch("models", "m1")
    downloads = []
    real = store.client.fget_object
    monkeypatch.setattr(store.client, "fget_object", lambda *a, **k: (downloads.append(a[1]), real(*a, **k))[1])
    assert store.fetch("models", "m1") == first and downloads == []
    (first / "w").write_bytes(b"truncated")  # a damaged cache copy is downloaded again
    assert (store.fetch("models", "m1") / "w").read_bytes() == b"weights" and downloads == ["models/m1/w"]


def test_sha_mismatch_is_detected(store, tmp_path):
    from shared.s3_store import ArtifactCorrupt

    store.publish("cotsets", "bad", _src(tmp_path, {"cot.jsonl": b"good data\n"}), {})
    store.client.put_object(BUCKET, "cotsets/bad/cot.jsonl", _bytes(b"evil data\n"), 10)  # same size, other bytes
    with pytest.raises(ArtifactCorrupt, match="sha256"):
        store.fetch("cotsets", "bad")
    assert not (store.cache / "cotsets" / "bad").exists()


def test_json_documents_and_scratch(store):
    store.put_json("grids/g1/results.json", {"cells": [1]})
    assert store.get_json("grids/g1/results.json") == {"cells": [1]}
    assert store.get_json("grids/none.json") is None
    p = store.scratch("checkpoints", "k")
    assert p.is_dir() and str(p).startswith(str(store.cache))
    (p / "state").write_text(json.dumps({"step": 3}))
    assert store.scratch("checkpoints", "k") == p and (p / "state").exists()


def _bytes(b: bytes):
    import io

    return io.BytesIO(b)
