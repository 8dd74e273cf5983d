"""What counts as a full disk, and the worker's guard that stops and resumes its consumer."""

from __future__ import annotations

import errno

import pytest

from shared.orchestration.disk import DiskGuard, is_disk_full
from shared.orchestration.tasks import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 960 vs 862"),
        RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
        Exception("Os { code: 28, kind: StorageFull, message: \"No space left on device\" } (os error 28)"),
    ],
)
def test_disk_full_errors_are_recognised_and_retried(exc):
    wrapped = RuntimeError("saving the training state failed")
    wrapped.__cause__ = exc
    assert is_disk_full(exc) and is_disk_full(wrapped) and is_transient(wrapped)


@pytest.mark.parametrize("exc", [OSError(errno.EACCES, "Permission denied"), ValueError("bad lr"), RuntimeError("CUDA error")])
def test_other_errors_are_not_a_full_disk(exc):
    assert not is_disk_full(exc)


class _Control:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, list[str]]] = []

    def cancel_consumer(self, queue, destination, reply):
        self.sent.append(("cancel", queue, destination))

    def add_consumer(self, queue, destination, reply):
        self.sent.append(("add", queue, destination))


class _App:
    def __init__(self) -> None:
        self.control = _Control()


def test_guard_pauses_and_resumes_by_free_space(tmp_path, monkeypatch):
    import shared.orchestration.disk as disk

    free = {"b": 10**9}
    monkeypatch.setattr(disk, "free_bytes", lambda path: free["b"])
    app = _App()
    g = DiskGuard(app, "train", "trainer-1@h", tmp_path, min_free_bytes=10**6, pause_s=0)
    g.check()
    assert app.control.sent == []  # room: nothing to do
    free["b"] = 10
    g.check()
    g.check()
    assert app.control.sent == [("cancel", "train", ["trainer-1@h"])]  # once
    free["b"] = 10**9
    g.check()
    assert app.control.sent[-1] == ("add", "train", ["trainer-1@h"]) and g.paused_until is None
    g.pause_s = 3600
    g.full()
    g.check()  # room, but the pause after a disk-full task is not over
    assert app.control.sent[-1][0] == "cancel" and g.paused_until is not None
