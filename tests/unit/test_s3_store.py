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
        store="s3",
        s3_endpoint=endpoint,
        s3_access_key=S3_KEY,
        s3_secret_key=S3_SECRET,
        s3_bucket=BUCKET,
        cache_dir=str(tmp_path / "cache"),
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
    pub = m["publication"]
    assert pub.startswith("pub-") and store.object_names("cotsets/k1/") == [
        "cotsets/k1/manifest.json",
        f"cotsets/k1/{pub}/cot.jsonl",
        f"cotsets/k1/{pub}/sub/x.bin",
    ] == store.artifact_objects("cotsets", "k1", m)
    d = store.fetch("cotsets", "k1")
    assert (d / "cot.jsonl").read_bytes() == b'{"id": 1}\n' and (d / "sub/x.bin").read_bytes() == b"\x00\x01"
    # publishing again is a no-op returning the first manifest
    assert (
        store.publish("cotsets", "k1", _src(tmp_path / "o", {"other": b"y"}), {})["published_at"]
        == m["published_at"]
    )


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
    real_put = store.client._put_object  # every PutObject request, the manifest's included
    monkeypatch.setattr(
        store.client,
        "_put_object",
        lambda b, name, *a, **k: (order.append(name), real_put(b, name, *a, **k))[1],
    )
    m = store.publish("evals", "e1", _src(tmp_path, {"a": b"1", "b": b"2", "c": b"3"}), {})
    pub = m["publication"]
    assert order == [f"evals/e1/{pub}/a", f"evals/e1/{pub}/b", f"evals/e1/{pub}/c", "evals/e1/manifest.json"]


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
    assert store.object_names("checkpoints/") == []  # the file that went up was removed again


def test_large_file_is_uploaded_in_parts(store, tmp_path):
    store.part_size = 5 * 1024 * 1024  # the S3 minimum
    data = os.urandom(11 * 1024 * 1024 + 7)
    m = store.publish("checkpoints", "big", _src(tmp_path, {"model.safetensors": data}), {})
    etag = store.client.stat_object(
        BUCKET, store.object_name("checkpoints", "big", m, "model.safetensors")
    ).etag.strip('"')
    assert etag.endswith("-3")  # an S3 multipart ETag: <md5 of part md5s>-<parts>
    assert (store.fetch("checkpoints", "big") / "model.safetensors").read_bytes() == data


def test_fetch_reuses_the_cache(store, tmp_path, monkeypatch):
    m = store.publish("models", "m1", _src(tmp_path, {"w": b"weights"}), {})
    first = store.fetch("models", "m1")
    downloads = []
    real = store.client.fget_object
    monkeypatch.setattr(
        store.client, "fget_object", lambda *a, **k: (downloads.append(a[1]), real(*a, **k))[1]
    )
    assert store.fetch("models", "m1") == first and downloads == []
    (first / "w").write_bytes(b"truncated")  # a damaged cache copy is downloaded again
    assert (store.fetch("models", "m1") / "w").read_bytes() == b"weights"
    (first / "w").write_bytes(b"WEIGHTS")  # so is one damaged at the same size
    assert (store.fetch("models", "m1") / "w").read_bytes() == b"weights"
    assert downloads == [store.object_name("models", "m1", m, "w")] * 2


def test_a_second_worker_keeps_the_copy_another_put_in_a_shared_cache(store, tmp_path, monkeypatch):
    """Two workers sharing a cache folder fetch one artifact at once: the copy in place stays put.

    The second worker checked the cache before the first one's copy landed, so it downloads too; on
    placing its download it must find the first copy intact and keep it (a trainer may be reading it),
    not remove it and put its own in its place.
    """
    from shared.s3_store import S3Store

    store.publish("models", "shared", _src(tmp_path, {"model.safetensors": b"weights" * 100}), {})
    first = store.fetch("models", "shared")
    inode = (first / "model.safetensors").stat().st_ino
    other = S3Store(store.client, store.bucket, store.cache.parent)  # a second worker, same cache folder
    early = [True]  # its first look at the cache came too early

    def cached_ok(dest, m) -> bool:
        return False if early and early.pop() else S3Store._cached_ok(dest, m)

    monkeypatch.setattr(other, "_cached_ok", cached_ok)
    assert other.fetch("models", "shared") == first
    assert (first / "model.safetensors").stat().st_ino == inode  # the first copy was kept, not replaced
    assert (first / "model.safetensors").read_bytes() == b"weights" * 100
    assert not any((store.cache / ".tmp").iterdir())  # the second download was dropped


def test_a_stale_cached_copy_is_replaced_whole(store, tmp_path):
    store.publish("models", "stale", _src(tmp_path, {"w": b"new weights"}), {})
    dest = store.cache / "models" / "stale"
    dest.mkdir(parents=True)
    (dest / "w").write_bytes(b"old weights")
    (dest / "manifest.json").write_text(json.dumps({"published_at": 1, "files": []}))
    assert (store.fetch("models", "stale") / "w").read_bytes() == b"new weights"
    assert not any((store.cache / ".tmp").iterdir())  # the stale copy, moved aside, is gone


def test_a_corrupt_artifact_is_quarantined_and_built_again(store, tmp_path):
    from shared.s3_store import ArtifactCorrupt

    m = store.publish("cotsets", "bad", _src(tmp_path, {"cot.jsonl": b"good data\n"}), {})
    name = store.object_name("cotsets", "bad", m, "cot.jsonl")
    store.client.put_object(BUCKET, name, _bytes(b"evil data\n"), 10)  # same size, other bytes
    with pytest.raises(ArtifactCorrupt, match="sha256.*quarantined"):
        store.fetch("cotsets", "bad")
    assert not (store.cache / "cotsets" / "bad").exists()
    assert not store.exists("cotsets", "bad")  # unpublished: the next grid builds it again
    assert store.get_json(f"quarantine/cotsets/bad/{m['publication']}.json")["files"] == m["files"]
    assert store.object_names("cotsets/bad/") == []
    again = store.publish("cotsets", "bad", _src(tmp_path / "again", {"cot.jsonl": b"good data\n"}), {})
    assert (store.fetch("cotsets", "bad") / "cot.jsonl").read_bytes() == b"good data\n" and again != m


def test_content_types_follow_the_extension(store, tmp_path, endpoint):
    import boto3

    files = {"metrics.json": b"{}", "predictions.jsonl": b"{}\n", "log.txt": b"x", "model.safetensors": b"\0"}
    m = store.publish("evals", "ct", _src(tmp_path, files), {})
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    got = {
        f: s3.head_object(Bucket=BUCKET, Key=store.object_name("evals", "ct", m, f))["ContentType"]
        for f in files
    }
    assert got == {
        "metrics.json": "application/json",
        "predictions.jsonl": "application/jsonl",
        "log.txt": "text/plain; charset=utf-8",
        "model.safetensors": "application/octet-stream",
    }
    assert s3.head_object(Bucket=BUCKET, Key="evals/ct/manifest.json")["ContentType"] == "application/json"


def _publish_at_the_barrier(endpoint: str, cache: str, payload: bytes, barrier, out) -> None:
    """A worker process: build its own content, upload it, then commit at the same moment as the other."""
    from shared.s3_store import S3Store
    from shared.settings import Settings

    st = S3Store.from_settings(
        Settings(
            store="s3",
            s3_endpoint=endpoint,
            s3_access_key=S3_KEY,
            s3_secret_key=S3_SECRET,
            s3_bucket=BUCKET,
            cache_dir=cache,
        )
    )
    real = st._put_if_absent

    def commit_together(name: str, data: bytes) -> bool:
        barrier.wait(timeout=60)  # both publications have uploaded their files: commit at once
        return real(name, data)

    st._put_if_absent = commit_together
    src = Path(cache) / "src"
    src.mkdir(parents=True)
    (src / "model.safetensors").write_bytes(payload)
    out.put(st.publish("checkpoints", "race", src, {"by": payload[:1].decode()})["publication"])


def test_concurrent_publishes_of_one_key_never_mix(store, endpoint, tmp_path):
    """Two processes that built one key differently (a frozen lease holder woken up, say) publish at
    once, 5 times: one publication wins whole, the loser's files are gone, the sha256s match."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for trial in range(5):
        for name in store.object_names("checkpoints/race/"):
            store.client.remove_object(BUCKET, name)
        barrier, out = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(
                target=_publish_at_the_barrier,
                args=(endpoint, str(tmp_path / f"{trial}-{w}"), w.encode() * 4096, barrier, out),
            )
            for w in "ab"
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        m = store.manifest("checkpoints", "race")
        assert {out.get(timeout=5), out.get(timeout=5)} == {m["publication"]}  # both report the winner's
        assert store.object_names("checkpoints/race/") == store.artifact_objects("checkpoints", "race", m)
        data = (store.fetch("checkpoints", "race") / "model.safetensors").read_bytes()
        assert data == m["by"].encode() * 4096  # the stored file is the winner's, and its sha256 matches


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


def test_cache_is_evicted_least_recently_used_first(store, tmp_path):
    import time

    for i, name in enumerate(("old", "mid", "new")):
        store.publish("models", name, _src(tmp_path / name, {"w": bytes([i]) * 1000}), {})
        d = store.fetch("models", name)
        past = time.time() - 3600 + i * 60  # fetched an hour ago, a minute apart
        os.utime(d / "manifest.json", (past, past))
    store.fetch("models", "old")  # used again just now: the most recent, and within the grace period
    assert store.evict(3200) == ["models/mid"]  # three of about 1.4 kB each (file and manifest)
    assert store.evict(0) == ["models/new"]  # "old" was used less than the grace period ago
    assert (store.cache / "models" / "old" / "w").exists() and store.evict(0, grace_s=0) == ["models/old"]
    store.cache_max_bytes = 1600  # a limit: each download evicts down to it
    for name in ("mid", "new"):
        store.fetch("models", name)
    assert sorted(p.name for p in (store.cache / "models").iterdir()) == ["mid", "new"]  # within the grace
