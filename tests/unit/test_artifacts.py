"""The local artifact store: content-key layout, atomic publish, nothing half-written visible."""

from __future__ import annotations

import json

import pytest

from shared.artifacts import MANIFEST, LocalStore
from shared.keys import content_key


def _src(tmp_path, name="src", text="hello"):
    d = tmp_path / name
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text(text)
    (d / "sub" / "b.bin").write_bytes(b"\x00\x01")
    return d


def test_publish_layout_and_manifest(tmp_path):
    store = LocalStore(tmp_path / "store")
    key = content_key("cotset", {"x": 1})
    assert not store.exists("cotsets", key)
    m = store.publish("cotsets", key, _src(tmp_path), {"stats": {"items": 2}})
    path = tmp_path / "store" / "cotsets" / key
    assert (path / "a.txt").read_text() == "hello" and (path / "sub" / "b.bin").exists()
    on_disk = json.loads((path / MANIFEST).read_text())
    assert on_disk == m and m["key"] == key and m["kind"] == "cotsets" and m["stats"] == {"items": 2}
    assert {f["path"] for f in m["files"]} == {"a.txt", "sub/b.bin"}
    assert store.keys("cotsets") == [key]
    assert store.fetch("cotsets", key) == path
    assert not any((tmp_path / "store" / ".tmp").iterdir())


def test_publish_is_idempotent_and_first_wins(tmp_path):
    store = LocalStore(tmp_path / "store")
    first = store.publish("evals", "k1", _src(tmp_path, "one", "first"), {"n": 1})
    second = store.publish("evals", "k1", _src(tmp_path, "two", "second"), {"n": 2})
    assert second == first
    assert (store.fetch("evals", "k1") / "a.txt").read_text() == "first"


def test_folder_without_manifest_does_not_exist_and_is_replaced(tmp_path):
    store = LocalStore(tmp_path / "store")
    half = tmp_path / "store" / "checkpoints" / "k2"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"torn")
    assert not store.exists("checkpoints", "k2")
    assert "k2" not in store.keys("checkpoints")
    with pytest.raises(FileNotFoundError):
        store.fetch("checkpoints", "k2")
    store.publish("checkpoints", "k2", _src(tmp_path), {})
    assert not (half / "model.safetensors").exists() and store.exists("checkpoints", "k2")


def test_bad_kind_or_key(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(ValueError, match="unknown artifact kind"):
        store.manifest("weights", "k")
    for key in ("", "../x", ".hidden"):
        with pytest.raises(ValueError, match="invalid artifact key"):
            store.manifest("evals", key)


def test_json_documents_and_scratch(tmp_path):
    store = LocalStore(tmp_path)
    assert store.get_json("grids/g1/grid.json") is None
    store.put_json("grids/g1/grid.json", {"name": "g"})
    assert store.get_json("grids/g1/grid.json") == {"name": "g"}
    work = store.scratch("checkpoints", "k3")
    (work / "state").mkdir()
    assert store.scratch("checkpoints", "k3") == work and (work / "state").exists()  # kept across calls
    assert not store.exists("checkpoints", "k3")


def test_content_keys_are_order_independent():
    assert content_key("x", {"a": 1, "b": [1, 2]}) == content_key("x", {"b": [1, 2], "a": 1})
    assert content_key("x", {"a": 1}) != content_key("y", {"a": 1})
    assert len(content_key("x", {})) == 24
