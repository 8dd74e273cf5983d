"""The one Celery app: JSON only, late acknowledgement, one task at a time per worker process.

Timeouts (production values; every one is overridable, see docs/distributed.md):

- ``broker_transport_options.visibility_timeout`` = ``COTD_VISIBILITY_TIMEOUT_S`` (default 90,000 s =
  25 h). With the Redis transport a message that was delivered but not acknowledged (its worker was
  SIGKILLed, lost power...) is delivered again once this has passed. It must exceed the longest task,
  or a long training run would be handed to a second worker while the first is still on it (the
  artifact lease in ``shared.orchestration.lease`` keeps that harmless, but wasteful).
- Hard time limits per task: train 24 h, generate 12 h, evaluate 6 h; the soft limit (which raises
  inside the task, so the cell is failed with that reason) comes 10 minutes earlier.
- ``worker_prefetch_multiplier`` = 1: a trainer holds no message it is not working on, so a queued
  training job is never stuck behind a 10-hour one on another GPU.

Poison messages: the broker transport and the worker's consumer are the ones of
``shared.orchestration.poison``, which dead-letter (``cotd:dead``) a message that cannot become a
task instead of stopping the worker. Task events (for flower) follow ``COTD_TASK_EVENTS``.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue as KombuQueue

from shared.queues import TASK_NAMES, Queue, task_routes
from shared.settings import Settings, get_settings

HOUR = 3600
TIME_LIMITS_S: dict[Queue, int] = {
    Queue.GENERATE: 12 * HOUR,
    Queue.TRAIN: 24 * HOUR,
    Queue.EVALUATE: 6 * HOUR,
}
"""Hard time limit per stage task."""
SOFT_MARGIN_S = 600
"""The soft limit comes this long before the hard one."""


def make_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app for `settings` (default: from the environment)."""
    s = settings or get_settings()
    app = Celery("cotd", broker=s.redis_url, backend=None, include=["shared.orchestration.tasks"])
    app.conf.update(
        broker_transport="shared.orchestration.poison:Transport",
        worker_consumer="shared.orchestration.poison:Consumer",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_track_started=False,
        task_default_queue=str(Queue.GENERATE),
        task_queues=[KombuQueue(str(q), routing_key=str(q)) for q in Queue],
        task_routes=task_routes(),
        task_annotations={
            TASK_NAMES[q]: {"time_limit": lim, "soft_time_limit": lim - SOFT_MARGIN_S}
            for q, lim in TIME_LIMITS_S.items()
        },
        broker_transport_options={"visibility_timeout": s.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=s.task_events,
        task_send_sent_event=s.task_events,
        enable_utc=True,
    )
    return app


app = make_app()
