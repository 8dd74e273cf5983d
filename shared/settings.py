"""Settings from the environment (prefix `COTD_`). Nothing secret lives in the code."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service settings; every field reads `COTD_<NAME>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="COTD_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Celery broker, result backend and grid state."
    )
    store: str = Field("local", description="Artifact store backend: `local` or `s3`.")
    store_dir: str = Field("./cotd-artifacts", description="Root of the local artifact store.")
    cache_dir: str = Field("~/.cache/cotd", description="Local cache of downloaded artifacts (S3 mode).")
    s3_endpoint: str = Field("127.0.0.1:9000", description="S3/MinIO endpoint host:port.")
    s3_access_key: str | None = Field(None, description="S3 access key (from the environment only).")
    s3_secret_key: str | None = Field(None, description="S3 secret key (from the environment only).")
    s3_bucket: str = Field("cotd", description="Bucket holding every artifact.")
    s3_secure: bool = Field(False, description="Use HTTPS for S3.")
    s3_region: str | None = Field(None, description="S3 region, if the server needs one.")
    teacher_url: str | None = Field(None, description="Default teacher server URL when a grid names none.")
    metrics_port: int = Field(9100, description="Port of a worker's Prometheus /metrics endpoint.")
    device: str = Field("auto", description="Torch device for training/evaluation: auto, cpu, cuda.")
    visibility_timeout_s: int = Field(
        90000,
        gt=0,
        description="Redis broker: an unacknowledged task is delivered again after this (> longest task).",
    )
    lease_ttl_s: int = Field(
        60, gt=0, description="Lease on an artifact being built; renewed while its task runs."
    )
    task_events: bool = Field(
        False,
        description="Workers send Celery task events (for flower / `celery events`); on in docker-compose.",
    )
    requeue_after_s: int = Field(
        120,
        gt=0,
        description="A running task whose lease has lapsed this long is enqueued again (a dead worker's).",
    )
    supervise_every_s: float = Field(
        15.0,
        gt=0,
        description="How often each worker's supervisor looks for lapsed leases and unfinished grids.",
    )
    cancel_check_s: float = Field(
        1.0, ge=0, description="A running task checks at most this often whether its grid was cancelled."
    )
    stage_mode: str = Field(
        "real", description="Workers: `real` stages, or `noop` trivial artifacts (benchmarks)."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
