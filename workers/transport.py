"""An httpx transport over aiohttp, for the workers' Cal.com calls.

The Cal.com client (``calhooks.service.calcom.client``) speaks httpx. httpx's own network layer
(httpcore on anyio, parsing with h11) costs about 2 ms of CPU per request when a worker has
dozens of calls in flight - more than everything else an event costs together, and the
ceiling on a worker's throughput. aiohttp's (a C parser, a plain asyncio connection pool)
costs well under 0.1 ms. ``AiohttpTransport`` keeps httpx's client API - requests,
responses, the client's retry rules - and moves only the bytes through aiohttp.

Behaviour kept from httpx's transport:

* the timeouts httpx puts on each request (connect, read, pool) apply;
* failures map to httpx's exceptions with the same meaning for retries: nothing was sent
  (``ConnectError``, ``ConnectTimeout``) or the request may have been sent (``ReadTimeout``,
  ``ReadError``, ``RemoteProtocolError``);
* responses reach httpx as received - compressed bodies are decoded by httpx, redirects are
  not followed - and HTTP(S)_PROXY/NO_PROXY from the environment are honoured.

The proxy settings are read from the environment once per host, not per request: aiohttp's
own ``trust_env`` looks them up - and parses ``~/.netrc`` - on a thread for every request,
which cost a worker more CPU than its Redis round trips (py-spy, docs/performance.md).
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx

#: Headers aiohttp writes itself from the request it sends.
_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _timeout(extensions: Mapping[str, Any]) -> aiohttp.ClientTimeout:
    timeouts = extensions.get("timeout") or {}
    pool, connect = timeouts.get("pool"), timeouts.get("connect")
    waiting = None if pool is None and connect is None else (pool or 0) + (connect or 0)
    return aiohttp.ClientTimeout(
        total=None, connect=waiting, sock_connect=connect, sock_read=timeouts.get("read")
    )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AiohttpTransport())``: httpx's API, aiohttp's I/O."""

    def __init__(self, *, max_connections: int = 100, keepalive_timeout: float = 15.0) -> None:
        self.max_connections = max_connections
        self.keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str] | None = None
        self._proxy_by_origin: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        """The proxy HTTP(S)_PROXY/NO_PROXY name for ``url`` (looked up once per host)."""
        origin = (url.scheme, url.netloc.decode("ascii"))
        if origin not in self._proxy_by_origin:
            if self._proxies is None:
                self._proxies = urllib.request.getproxies_environment()
            proxy = self._proxies.get(url.scheme)
            bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
            if proxy is not None and bypass(url.host, self._proxies):
                proxy = None
            self._proxy_by_origin[origin] = proxy
        return self._proxy_by_origin[origin]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=0,
                keepalive_timeout=self.keepalive_timeout,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                trust_env=False,  # proxies: see _proxy
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.decode("latin-1").lower() not in _FRAMING
        ]
        try:
            async with self._client().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                proxy=self._proxy(request.url),
                timeout=_timeout(request.extensions),
            ) as answer:
                content = await answer.read()
                raw_headers = [(bytes(k), bytes(v)) for k, v in answer.raw_headers]
                status = answer.status
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        return httpx.Response(
            status_code=status,
            headers=raw_headers,
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            # aiohttp closes its sockets on the next loop turn; let them go before returning.
            await asyncio.sleep(0)


def http_client(*, timeout: httpx.Timeout, max_connections: int) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` the workers give ``CalcomClient`` (same defaults as its own)."""
    return httpx.AsyncClient(
        transport=AiohttpTransport(max_connections=max_connections),
        timeout=timeout,
        headers={"User-Agent": "calhooks", "Accept": "application/json"},
        follow_redirects=False,
    )
