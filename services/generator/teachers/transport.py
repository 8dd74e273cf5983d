"""An aiohttp transport for the httpx2 client that `AsyncInferenceClient` sends its requests through.

`huggingface_hub` still builds every request, adds its headers, raises its errors and parses the
replies; only the bytes on the wire go through aiohttp, whose C HTTP parser and connection pool cost
about 40 % less CPU per request than httpcore's. At a few hundred short requests per second, a
single event loop is otherwise CPU-bound on the client side (see bench/generator.py).

aiohttp errors are re-raised as the httpx2 errors the hub and `retry.classify` expect (timeouts as
`httpx2.TimeoutException`, so the hub turns them into `InferenceTimeoutError`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx2


@contextmanager
def _reading_body(request: httpx2.Request | None = None) -> Iterator[None]:
    """Re-raise aiohttp's errors while reading a body as the httpx2 errors the hub expects."""
    try:
        yield
    except aiohttp.ClientPayloadError as exc:
        raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx2.ReadTimeout(str(exc) or "read timed out", request=request) from exc


class _Body(httpx2.AsyncByteStream):
    """A response body read lazily from aiohttp (so streamed replies stay streamed)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _reading_body():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


def _timeout(request: httpx2.Request) -> aiohttp.ClientTimeout:
    t: dict[str, Any] = request.extensions.get("timeout") or {}
    return aiohttp.ClientTimeout(total=None, connect=t.get("connect"), sock_read=t.get("read"))


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends httpx2 requests with one aiohttp session (keep-alive pool of `limit` connections)."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.requests = 0  # requests sent (for tests and logs)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit),
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Content-Type"),  # httpx2 already set them
            )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send one request; an event stream is passed on through `_Body`, any other body read whole."""
        body = await request.aread()
        self.requests += 1
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,  # httpx2 follows redirects itself
                timeout=_timeout(request),
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx2.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx2.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError,
        ) as exc:
            raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx2.NetworkError(str(exc), request=request) from exc
        # decoded already (auto_decompress), so the encoding header must not make httpx2 decode again
        headers = [(k, v) for k, v in response.raw_headers if k.lower() != b"content-encoding"]
        if response.content_type == "text/event-stream":
            return httpx2.Response(response.status, headers=headers, stream=_Body(response), request=request)
        try:
            with _reading_body(request):
                content = await response.read()  # a whole reply: read here, saving the stream's loop hops
        finally:
            response.release()
        return httpx2.Response(response.status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def http_client(limit: int) -> httpx2.AsyncClient:
    """An httpx2 client like the hub's default one (its event hooks, redirects, no client timeout)."""
    from huggingface_hub import get_async_session

    hooks = get_async_session().event_hooks  # a fresh, unopened client: only its hooks are read
    return httpx2.AsyncClient(
        transport=AiohttpTransport(limit), event_hooks=hooks, follow_redirects=True, timeout=None
    )
