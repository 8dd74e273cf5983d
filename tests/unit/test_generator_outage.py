"""A teacher outage publishes nothing and is retryable; the journaled replies are not lost."""

from __future__ import annotations

import socket

import pytest

from services.generator.build import TeacherUnavailable
from shared.artifacts import LocalStore
from shared.orchestration.stages import generate_stage
from shared.orchestration.tasks import is_transient
from shared.specs import CotSetSpec, DatasetRef, TeacherSpec


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


def test_all_requests_failing_is_an_outage_not_a_cot_set(tmp_path):
    teacher = TeacherSpec(
        name="down",
        kind="openai",
        model="m",
        base_url=f"http://127.0.0.1:{_closed_port()}/v1",
        max_retries=0,
        timeout_s=2,
        concurrency=2,
    )
    spec = CotSetSpec(
        dataset=DatasetRef(name="arith", train_size=3), teacher=teacher, level=3, format="cot", prompt_version="p1"
    )
    store = LocalStore(tmp_path)
    with pytest.raises(TeacherUnavailable, match=r"^teacher down: all 3 requests failed") as exc:
        generate_stage(spec, store)
    assert is_transient(exc.value)  # the worker retries it with backoff
    assert not store.exists("cotsets", spec.key)
    assert store.keys("cotsets") == []
