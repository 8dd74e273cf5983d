"""Poison messages (#18.1): malformed messages pushed straight onto a queue, against real workers.

Each one is dead-lettered to `cotd:dead` with a reason and dropped (nothing is left on the queue or
among the unacknowledged messages); the worker stays up and then runs a normal grid.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from tests.faults.queue_cluster import noop_grid, queue_cluster
from tests.integration.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 9
ISSUE_MESSAGE = (
    '{"headers":{"task":"cotd.train","id":"m7"},"properties":{"delivery_tag":"t","body_encoding":"base64",'
    '"delivery_info":{"exchange":"","routing_key":"train"}}}'
)
"""The exact message of issue #18 (no body)."""


def envelope(
    body, task: str = "cotd.train", encoding: str | None = "base64", headers=None, properties=None
) -> str:
    """A Redis-transport envelope as kombu writes it, with the given body and Celery protocol 2 headers."""
    tid = str(uuid.uuid4())
    props = {
        "delivery_tag": str(uuid.uuid4()),
        "delivery_info": {"exchange": "", "routing_key": "train"},
        "priority": 0,
        "correlation_id": tid,
    }
    if encoding:
        props["body_encoding"] = encoding
    doc = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers if headers is not None else {"lang": "py", "task": task, "id": tid, "retries": 0},
        "properties": properties if properties is not None else props,
    }
    return json.dumps(doc)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


VARIANTS = {
    "no body (the issue's message)": ISSUE_MESSAGE,
    "body is a dict": envelope({"grid_id": "g"}, encoding=None),
    "body is a dict, base64": envelope({"grid_id": "g"}),
    "bad base64": envelope("%%% not base64 %%%"),
    "body not JSON": envelope(b64(b"[[{not json")),
    "body JSON but not a task": envelope(b64(b'{"grid_id": "g"}')),
    "unknown task": envelope(b64(b'[[{"grid_id": "g"}], {}, {}]'), task="cotd.nope"),
    "headers not an object": envelope(b64(b"[[], {}, {}]"), headers="cotd.train"),
    "no properties": json.dumps(
        {"body": b64(b"[[], {}, {}]"), "headers": {"task": "cotd.train", "id": "p1"}}
    ),
    "no arguments": envelope(b64(b"[[], {}, {}]")),
    "two arguments": envelope(b64(b'[[{"grid_id": "g"}, 2], {"x": 1}, {}]')),
    "envelope not JSON": "{this is not json",
    "envelope not UTF-8": b"\xff\xfe{",
    "envelope not an object": "[1, 2, 3]",
}


@pytest.fixture(scope="module")
def cluster():
    with queue_cluster(REDIS_DB, "cotd-poison", COTD_STAGE_MODE="noop") as c:
        c.trainer = c.worker("trainer")
        c.worker("generator")
        c.worker("evaluator")
        yield c


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_poison_message_is_dead_lettered(cluster, variant):
    from shared.orchestration.deadletter import dead_letters

    r = cluster.redis
    before = r.llen("cotd:dead")
    r.lpush("train", VARIANTS[variant])
    wait_for(lambda: r.llen("cotd:dead") == before + 1, 20, f"the dead letter of {variant!r}")
    rec = dead_letters(r, 1)[0]
    assert rec["reason"] and rec["time"] > 0
    assert rec["queue"] in ("train", None)
    wait_for(lambda: r.llen("train") == 0, 10, "the train queue to drain")
    assert r.hlen("unacked") == 0  # dropped for good: it cannot come back after the visibility timeout
    assert cluster.trainer.proc.poll() is None, cluster.trainer.log()[-3000:]
    assert "Unrecoverable error" not in cluster.trainer.log()


def test_worker_goes_on_after_poison(cluster):
    r = cluster.redis
    for raw in VARIANTS.values():  # all at once, ahead of a real grid's train message
        r.lpush("train", raw)
    res = cluster.submit(noop_grid("after-poison", seeds=2))
    assert cluster.wait(res.grid_id) == "done", cluster.state(res.grid_id).hash("reasons")
    assert cluster.state(res.grid_id).stage_counts()["train"]["computed"] == 2
    assert cluster.trainer.proc.poll() is None and "Unrecoverable error" not in cluster.trainer.log()
    assert r.llen("train") == 0 and r.hlen("unacked") == 0


def test_cli_shows_dead_letters(cluster):
    cluster.redis.lpush("train", ISSUE_MESSAGE)
    wait_for(
        lambda: any(json.loads(x).get("id") == "m7" for x in cluster.redis.lrange("cotd:dead", 0, 0)),
        20,
        "m7",
    )
    out = cluster.cli("grid", "dead", "--json", "--limit", "5")
    assert out.returncode == 0, out.stderr
    recs = json.loads(out.stdout)
    assert (
        len(recs) == 5
        and recs[0]["id"] == "m7"
        and recs[0]["task"] == "cotd.train"
        and recs[0]["queue"] == "train"
    )
    text = cluster.cli("grid", "dead", "--limit", "1")
    assert text.returncode == 0 and "m7" in text.stdout and "train" in text.stdout
