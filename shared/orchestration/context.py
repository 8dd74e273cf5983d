"""What the orchestration code talks to: settings, Redis, the artifact store and the Celery app."""

from __future__ import annotations

from functools import cached_property

import redis
from celery import Celery

from shared.artifacts import ArtifactStore
from shared.s3_store import open_store
from shared.settings import Settings, get_settings


class Context:
    """Lazily opened connections for one process (or one test)."""

    def __init__(self, settings: Settings | None = None, store: ArtifactStore | None = None) -> None:
        self.settings = settings or get_settings()
        if store is not None:
            self.__dict__["store"] = store

    @cached_property
    def redis(self) -> redis.Redis:
        """Grid state (the broker's Redis, same URL)."""
        return redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=5, health_check_interval=30)

    @cached_property
    def store(self) -> ArtifactStore:
        """The artifact store the settings name (S3/MinIO in distributed mode)."""
        return open_store(self.settings)

    @cached_property
    def app(self) -> Celery:
        """The Celery app for these settings."""
        from shared.celery_app import app, make_app

        if self.settings == get_settings():
            return app
        return make_app(self.settings)


_CONTEXT: Context | None = None


def get_context() -> Context:
    """The process-wide context (workers, CLI)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = Context()
    return _CONTEXT
