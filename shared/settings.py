"""Settings from the environment (prefix `COTD_`). Nothing secret lives in the code."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import CotdError

PLACEHOLDER = "change-me"
"""How every secret placeholder in `.env.example` starts; refused as a real secret."""


class SettingsError(CotdError, ValueError):
    """A setting is invalid; the message is one line naming the variable (never its value)."""


def is_placeholder(secret: str | None) -> bool:
    """Whether `secret` is still a `.env.example` placeholder (`change-me...`)."""
    return bool(secret) and secret.strip().lower().startswith(PLACEHOLDER)


def url_with_password(url: str, password: str) -> str:
    """`url` with `password` filled in (URL-quoted) when the URL carries none."""
    parts = urlsplit(url)
    if parts.password is not None or not parts.hostname:
        return url
    user = quote(parts.username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


class Settings(BaseSettings):
    """Service settings; every field reads `COTD_<NAME>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="COTD_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", repr=False, description="Celery broker, result backend and grid state."
    )
    redis_password: str | None = Field(
        None, repr=False, description="Redis password (AUTH); filled into COTD_REDIS_URL when that has none."
    )
    store: str = Field("local", description="Artifact store backend: `local` or `s3`.")
    store_dir: str = Field("./cotd-artifacts", description="Root of the local artifact store.")
    cache_dir: str = Field("~/.cache/cotd", description="Local cache of downloaded artifacts (S3 mode).")
    s3_endpoint: str = Field("127.0.0.1:9000", description="S3/MinIO endpoint host:port.")
    s3_access_key: str | None = Field(None, description="S3 access key (from the environment only).")
    s3_secret_key: str | None = Field(
        None, repr=False, description="S3 secret key (from the environment only)."
    )
    s3_bucket: str = Field("cotd", description="Bucket holding every artifact.")
    s3_secure: bool = Field(False, description="Use HTTPS for S3.")
    s3_region: str | None = Field(None, description="S3 region, if the server needs one.")
    teacher_url: str | None = Field(None, description="Default teacher server URL when a grid names none.")
    metrics_port: int = Field(9100, description="Port of a worker's Prometheus /metrics endpoint.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address the /metrics server binds (compose sets 0.0.0.0 for Prometheus)."
    )
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
        90,
        gt=0,
        description="A running task whose lease has not been renewed for this long (a dead worker's) is enqueued again.",
    )
    supervise_every_s: float = Field(
        10.0, gt=0, description="How often each worker's supervisor looks for lapsed leases and unfinished grids."
    )
    cancel_check_s: float = Field(
        1.0, ge=0, description="A running task checks at most this often whether its grid was cancelled."
    )
    stage_mode: str = Field(
        "real", description="Workers: `real` stages, or `noop` trivial artifacts (benchmarks)."
    )
    api_key_env_allow: str = Field(
        "*_API_KEY,HF_TOKEN",
        description="Comma-separated names or fnmatch patterns of the variables a grid's `api_key_env` may name "
        "(a COTD_* variable never).",
    )
    data_roots: str = Field(
        "",
        description=f"Folders ({os.pathsep!r}-separated) under which a worker reads the files a grid names "
        "(dataset and recorded-teacher files, local student models). Empty: a worker reads none.",
    )
    cache_max_gb: float = Field(
        0.0,
        ge=0,
        description="S3 mode: keep the download cache under this size by evicting the least recently used "
        "artifacts (0: no limit).",
    )
    min_free_mb: int = Field(
        512, ge=0, description="Workers: below this much free space on the cache disk a worker takes no new tasks."
    )
    disk_full_pause_s: float = Field(
        300.0, ge=0, description="Workers: after a task ran out of disk, take no tasks for at least this long."
    )
    retry_backoff_s: float = Field(
        30.0,
        gt=0,
        description="First retry delay of a task that met an outage; doubles per retry (capped at 10 min, full jitter).",
    )
    allow_remote_code: bool = Field(
        False,
        description="Workers: honour `trust_remote_code: true` from a queue message (runs the model's code).",
    )

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        for var, value in (
            ("COTD_S3_SECRET_KEY", self.s3_secret_key),
            ("COTD_S3_ACCESS_KEY", self.s3_access_key),
            ("COTD_REDIS_PASSWORD", self.redis_password),
            ("COTD_REDIS_URL", urlsplit(self.redis_url).password),
        ):
            if is_placeholder(value):
                raise ValueError(
                    f"{var}: still the {PLACEHOLDER}... placeholder from .env.example; set a real secret"
                )
        if self.redis_password:
            self.redis_url = url_with_password(self.redis_url, self.redis_password)
        return self

    @property
    def api_key_env_patterns(self) -> list[str]:
        """The allow-list of `api_key_env` names and patterns."""
        return [p.strip() for p in self.api_key_env_allow.split(",") if p.strip()]

    @property
    def data_root_paths(self) -> list[Path]:
        """The data roots, absolute and resolved."""
        return [Path(p).expanduser().resolve() for p in self.data_roots.split(os.pathsep) if p.strip()]


def load_settings(**values: object) -> Settings:
    """Settings from the environment (and `values`); raises SettingsError with one line naming the variable."""
    try:
        return Settings(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = f"COTD_{str(first['loc'][0]).upper()}: " if first["loc"] else ""
        raise SettingsError(where + str(first["msg"]).removeprefix("Value error, ")) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()
