"""The dead-letter list: every queue message a worker could not run, with the reason.

`cotd:dead` is a Redis list of JSON records, newest first, capped at `MAX_RECORDS`:
`{"time", "queue", "reason", "task", "id", "headers", "body"}` (headers and body as text,
truncated to `MAX_TEXT` characters). `cotd grid dead` shows it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

log = logging.getLogger("cotd.worker")

DEAD_KEY = "cotd:dead"
MAX_RECORDS = 1000
MAX_TEXT = 2000


def _text(value: Any) -> str | None:
    """`value` as at most MAX_TEXT characters of text (JSON where it serializes)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        s = value.decode("utf-8", errors="replace")
    elif isinstance(value, str):
        s = value
    else:
        try:
            s = json.dumps(value, default=repr)
        except (TypeError, ValueError):
            s = repr(value)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + f"... ({len(s)} chars)"


def dead_record(queue: str | None, reason: str, headers: Any = None, body: Any = None) -> dict[str, Any]:
    """One dead-letter record (pure)."""
    h = headers if isinstance(headers, dict) else {}
    return {
        "time": round(time.time(), 3),
        "queue": queue,
        "reason": reason.splitlines()[0][:500] if reason else "unknown",
        "task": h.get("task") if isinstance(h.get("task"), str) else None,
        "id": h.get("id") if isinstance(h.get("id"), str) else None,
        "headers": _text(headers),
        "body": _text(body),
    }


def dead_letter(
    r: redis.Redis, queue: str | None, reason: str, headers: Any = None, body: Any = None
) -> None:
    """Log and record a message that is dropped; never raises (a worker must go on)."""
    rec = dead_record(queue, reason, headers, body)
    log.error(
        "dead-lettered message %s (task %s) on queue %s: %s", rec["id"], rec["task"], queue, rec["reason"]
    )
    try:
        pipe = r.pipeline(transaction=True)
        pipe.lpush(DEAD_KEY, json.dumps(rec))
        pipe.ltrim(DEAD_KEY, 0, MAX_RECORDS - 1)
        pipe.execute()
    except redis.RedisError as e:
        log.error("cannot record the dead letter in %s: %s", DEAD_KEY, e)


def dead_letters(r: redis.Redis, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` records."""
    return [json.loads(x) for x in r.lrange(DEAD_KEY, 0, limit - 1)]
