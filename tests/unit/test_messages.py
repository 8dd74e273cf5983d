"""Queue messages: valid ones round-trip through JSON; invalid ones are refused with a reason."""

from __future__ import annotations

import json

import pytest

from shared.grid import expand, parse_grid
from shared.messages import (
    BadMessage,
    EvaluateMessage,
    GenerateMessage,
    TrainMessage,
    dump_message,
    parse_message,
)
from shared.queues import Queue


@pytest.fixture(scope="module")
def cell():
    grid = parse_grid(
        {
            "name": "m",
            "datasets": [{"name": "arith", "train_size": 8, "test_size": 4}],
            "teachers": [{"name": "p", "kind": "procedural"}],
            "levels": [2],
            "students": [{"name": "s", "model": "tiny:xs"}],
            "training": {"max_steps": 3},
        }
    )
    return expand(grid)[0]


def test_valid_messages_round_trip_as_json(cell):
    for queue, msg in (
        (Queue.GENERATE, GenerateMessage(grid_id="g-1", cot=cell.cot)),
        (Queue.TRAIN, TrainMessage(grid_id="g-1", checkpoint=cell.checkpoint)),
        (Queue.EVALUATE, EvaluateMessage(grid_id="g-1", evaluation=cell.evaluation)),
    ):
        wire = json.loads(json.dumps(dump_message(msg)))  # what Celery's JSON serializer carries
        back = parse_message(queue, wire)
        assert back == msg and back.key == msg.key
        assert parse_message(queue, json.dumps(wire)).key == msg.key
    assert TrainMessage(grid_id="g", checkpoint=cell.checkpoint).key == cell.checkpoint.key


def test_unknown_field_is_refused(cell):
    wire = dump_message(TrainMessage(grid_id="g", checkpoint=cell.checkpoint)) | {"weights": [0.1]}
    with pytest.raises(BadMessage, match="weights: unknown field"):
        parse_message("train", wire)


def test_unknown_nested_field_is_refused(cell):
    wire = dump_message(GenerateMessage(grid_id="g", cot=cell.cot))
    wire["cot"]["teacher"]["secret"] = "x"
    with pytest.raises(BadMessage, match=r"cot\.teacher\.secret: unknown field"):
        parse_message("generate", wire)


def test_missing_keys_are_refused():
    with pytest.raises(BadMessage, match="evaluation: missing field"):
        parse_message("evaluate", {"grid_id": "g"})
    with pytest.raises(BadMessage, match="grid_id: missing field"):
        parse_message("generate", {})


@pytest.mark.parametrize("payload", ['{"grid_id": "g", ', "not json", b"\xff\xfe"])
def test_malformed_json_is_refused(payload):
    with pytest.raises(BadMessage, match="Invalid JSON|invalid"):
        parse_message("train", payload)


@pytest.mark.parametrize("payload", [None, 3, ["grid_id"]])
def test_non_object_is_refused(payload):
    with pytest.raises(BadMessage, match="must be a JSON object"):
        parse_message("train", payload)


def test_bad_grid_id_and_wrong_queue_shape(cell):
    with pytest.raises(BadMessage, match="grid_id"):
        parse_message("generate", {"grid_id": "../etc", "cot": json.loads(cell.cot.model_dump_json())})
    # a train message sent to the generate queue names the field that is wrong
    wire = dump_message(TrainMessage(grid_id="g", checkpoint=cell.checkpoint))
    with pytest.raises(BadMessage, match="unknown field|missing field"):
        parse_message("generate", wire)
