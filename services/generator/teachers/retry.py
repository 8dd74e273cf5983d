"""Retry policy for teacher requests: which failures are retried, and exponential backoff with jitter."""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import first_line


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter: sleep U(0.5, 1) * min(cap, base * 2**attempt)."""

    model_config = ConfigDict(frozen=True)

    base_s: float = Field(0.5, gt=0, description="Backoff before the first retry (before jitter).")
    cap_s: float = Field(30.0, gt=0, description="Longest backoff.")
    honor_retry_after: bool = Field(True, description="Wait at least the server's Retry-After (capped).")

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        r = (rng or random).uniform(0.5, 1.0)
        d = r * min(self.cap_s, self.base_s * (2**attempt))
        if self.honor_retry_after and retry_after is not None and retry_after > 0:
            d = max(d, min(self.cap_s, retry_after))
        return d


class Failure(BaseModel):
    """A classified request failure."""

    status: str  # overloaded, http_error, timeout, error (the metric's status label)
    http_code: int | None = None
    retryable: bool
    overloaded: bool = False
    retry_after: float | None = None
    message: str


def _retry_after(response) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def classify(exc: BaseException) -> Failure:
    """How one exception from a teacher call is counted and whether it is retried.

    429 and 503 are overload answers (retried, and they cut the adaptive concurrency limit); 408, 425, 500, 502
    and 504 are retried; other 4xx (bad request, auth) are not. Timeouts and connection errors are
    retried.
    """
    from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OverloadedError

    msg = first_line(exc)[:300]
    if isinstance(exc, InferenceTimeoutError | asyncio.TimeoutError | TimeoutError):
        return Failure(status="timeout", retryable=True, message=f"timeout: {msg or 'request timed out'}")
    # text_generation turns TGI's {"error", "error_type"} answers into its own errors, raised from the HTTP error
    http = exc if isinstance(exc, HfHubHTTPError) else exc.__cause__
    response = getattr(http, "response", None)
    code = getattr(response, "status_code", None)
    overloaded = isinstance(exc, OverloadedError) or (isinstance(http, HfHubHTTPError) and code in (429, 503))
    if overloaded:
        code = code if code in (429, 503) else 429
        return Failure(
            status="overloaded",
            http_code=code,
            retryable=True,
            overloaded=True,
            retry_after=_retry_after(response),
            message=f"HTTP {code}: {msg}",
        )
    if isinstance(http, HfHubHTTPError) and code is not None:
        retry = code in (408, 425, 500, 502, 504)
        return Failure(
            status="http_error",
            http_code=code,
            retryable=retry,
            retry_after=_retry_after(response),
            message=f"HTTP {code}: {msg}",
        )
    try:
        import httpx2

        transport = (httpx2.TransportError,)
    except ImportError:  # pragma: no cover - huggingface_hub depends on it
        transport = ()
    if isinstance(exc, transport + (ConnectionError, OSError)):
        return Failure(status="error", retryable=True, message=f"{type(exc).__name__}: {msg}")
    return Failure(status="error", retryable=False, message=f"{type(exc).__name__}: {msg}")
