"""Poison messages: a message the worker cannot even turn into a task is dead-lettered and dropped.

Kombu and Celery fail on some malformed messages before any task code runs: a list item that is not
UTF-8 or not JSON, an envelope without `properties`, a body that is not valid base64, a message without a body
(`TypeError` in Celery's strategy). Left alone, each of these is an "Unrecoverable error" that stops
the worker, and the message is restored to the queue, so it stops every later worker too.

Two hooks catch them (both set in `shared.celery_app`):
- `Transport` (the Redis transport, `broker_transport`): a failure while the message is read,
  wrapped or handed to Celery is dead-lettered; the message is acknowledged if it was registered
  as unacknowledged, so it never comes back;
- `Consumer` (`worker_consumer`): the messages Celery itself refuses (unknown task, undecodable
  body, unknown format, invalid task) are dead-lettered as well, then refused as Celery does.
"""

from __future__ import annotations

import json
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport import redis as kombu_redis

from shared.orchestration.deadletter import dead_letter


def _redis():
    from shared.orchestration.context import get_context

    return get_context().redis


def _queue_of(message: Any) -> str | None:
    info = getattr(message, "delivery_info", None) or {}
    return info.get("routing_key") if isinstance(info, dict) else None


def _reason(what: str, exc: BaseException | None) -> str:
    return f"{what}: {type(exc).__name__}: {exc}" if exc is not None else what


class Channel(kombu_redis.Channel):
    """The Redis channel, but a queue item that is not JSON is dead-lettered instead of raised."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return super()._brpop_read(**options)
        except json.JSONDecodeError as e:  # the list item itself is not JSON (it is already popped)
            dead_letter(_redis(), None, _reason("message is not JSON", e), body=e.doc)
            return True
        except UnicodeDecodeError as e:  # nor text
            dead_letter(_redis(), None, _reason("message is not UTF-8", e), body=e.object)
            return True


class Transport(kombu_redis.Transport):
    """The Redis transport with poison messages dead-lettered rather than fatal."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        try:
            super()._deliver(message, queue)
        except Exception as e:  # any failure before a task runs: the message is poison
            raw = message if isinstance(message, dict) else {}
            try:
                self._forget(raw)
            finally:  # recorded once it is gone
                dead_letter(_redis(), queue, _reason("malformed message", e), raw.get("headers"), raw.get("body", message))

    def _forget(self, raw: dict[str, Any]) -> None:
        """Acknowledge the message if the channel had registered it as unacknowledged."""
        props = raw.get("properties")
        tag = props.get("delivery_tag") if isinstance(props, dict) else None
        if not isinstance(tag, str):
            return
        for ch in self.channels:
            if tag in ch.qos._delivered and tag not in ch.qos._dirty:
                ch.basic_ack(tag)
                return


class Consumer(CeleryConsumer):
    """Celery's consumer, but every message it refuses is also dead-lettered (once refused)."""

    def on_unknown_message(self, body: Any, message: Any) -> None:
        try:
            super().on_unknown_message(body, message)
        finally:
            dead_letter(_redis(), _queue_of(message), "unknown message format", message.headers, message.body)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        try:
            super().on_unknown_task(body, message, exc)
        finally:
            dead_letter(_redis(), _queue_of(message), _reason("unknown task", exc), message.headers, message.body)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        try:
            super().on_invalid_task(body, message, exc)
        finally:
            dead_letter(_redis(), _queue_of(message), _reason("invalid task", exc), message.headers, message.body)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        try:
            super().on_decode_error(message, exc)
        finally:
            dead_letter(_redis(), _queue_of(message), _reason("cannot decode", exc), message.headers, message.body)
