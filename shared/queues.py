"""Queue names and task routing: one Celery queue per stage."""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    """The three work queues (Redis lists of the same name)."""

    GENERATE = "generate"
    TRAIN = "train"
    EVALUATE = "evaluate"


TASK_NAMES: dict[Queue, str] = {
    Queue.GENERATE: "cotd.generate",
    Queue.TRAIN: "cotd.train",
    Queue.EVALUATE: "cotd.evaluate",
}
"""The task served on each queue."""

ROLE_QUEUES: dict[str, Queue] = {"generator": Queue.GENERATE, "trainer": Queue.TRAIN, "evaluator": Queue.EVALUATE}
"""`cotd worker ROLE` -> the queue it consumes."""

ARTIFACT_KIND: dict[Queue, str] = {Queue.GENERATE: "cotsets", Queue.TRAIN: "checkpoints", Queue.EVALUATE: "evals"}
"""The artifact kind each stage publishes."""


def task_routes() -> dict[str, dict[str, str]]:
    """Celery `task_routes`: each task to its queue."""
    return {name: {"queue": str(q)} for q, name in TASK_NAMES.items()}
