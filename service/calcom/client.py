"""The async Cal.com API v2 client: ``await client.call("<tool>", **params)``.

Every call is validated against the tools registry before anything is sent, goes out
through one pooled ``httpx.AsyncClient``, and comes back unwrapped from Cal.com's
``{"status": "success", "data": ...}`` envelope. A non-2xx answer raises ``CalcomError``.

Retries (``retries`` extra attempts, exponential back-off with full jitter, Cal.com's
``Retry-After`` / ``X-RateLimit-Reset-*`` honoured before our own back-off):

* 429 - any method: Cal.com's throttler rejects the request before any handler runs.
* connection failures before the request was sent (connect error, connect timeout,
  pool timeout) - any method.
* 5xx, read/write timeouts, dropped connections - only GET, PATCH and DELETE, which leave
  the same state when repeated. A POST (create) that may have reached Cal.com is not
  repeated here: the caller decides (workers check for the entity before re-creating).

When Cal.com asks for a wait longer than ``max_delay`` the client stops and raises, with
``CalcomError.retry_after`` set, so a worker can defer the job instead of holding a slot.

Credentials and base URL belong to the ``CalcomClient``, not to the shared
``httpx.AsyncClient``: one connection pool can serve several Cal.com accounts (the MCP
server's connections) via ``client.with_credentials(...)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import httpx
import structlog

from calhooks.service.calcom.backoff import Backoff, server_wait
from calhooks.service.calcom.errors import CalcomError, CalcomTransportError
from calhooks.service.calcom.tools import Tool, get_operation
from calhooks.service.calcom.validation import prepare_request
from calhooks.service.core.settings import Settings

logger = structlog.get_logger(__name__)

_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError)


class RequestGate(Protocol):
    """Hooks around every HTTP attempt: a shared rate limiter, metrics."""

    async def before(self, tool: Tool) -> None: ...

    async def after(self, tool: Tool, response: httpx.Response | None, elapsed: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to authenticate: an API key (Bearer) or a platform client id + secret."""

    api_key: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        """The organization's credentials from ``CALHOOKS_API_KEY`` or the platform client."""
        return cls(
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            client_id=settings.client_id,
            client_secret=(
                settings.client_secret.get_secret_value() if settings.client_secret else None
            ),
        )

    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"Authorization": f"Bearer {self.api_key}"}
        if self.client_id and self.client_secret:
            return {"x-cal-client-id": self.client_id, "x-cal-secret-key": self.client_secret}
        return {}

    def __repr__(self) -> str:
        return "Credentials(***)"


@dataclass(frozen=True, slots=True)
class CalcomResponse:
    """An unwrapped 2xx answer: ``data`` plus what else the envelope and headers said."""

    status: int
    data: Any
    pagination: Mapping[str, Any] | None = None
    request_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _error_from(tool: Tool, response: httpx.Response) -> CalcomError:
    code, message, details = f"HTTP_{response.status_code}", response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = str(error.get("code", code))
            message = str(error.get("message", message))
            details = error.get("details")
        elif isinstance(body.get("message"), str):
            message = body["message"]
    return CalcomError(
        tool=tool.name,
        status=response.status_code,
        code=code,
        message=message,
        details=details,
        request_id=response.headers.get("x-request-id"),
        headers=dict(response.headers),
    )


class CalcomClient:
    """Calls the 37 organization tools against one Cal.com account."""

    def __init__(
        self,
        *,
        base_url: str = "https://api.cal.com",
        credentials: Credentials | None = None,
        org_id: int | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout | float = 10.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        gate: RequestGate | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_connections: int = 20,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials or Credentials()
        self.org_id = org_id
        self.retries = retries
        self.backoff = backoff or Backoff()
        self.gate = gate
        self._sleep = sleep
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": "calhooks", "Accept": "application/json"},
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CalcomClient:
        options: dict[str, Any] = {
            "base_url": settings.api_url,
            "credentials": Credentials.from_settings(settings),
            "org_id": settings.org_id,
            "timeout": httpx.Timeout(settings.api_timeout, connect=settings.api_connect_timeout),
            "retries": settings.api_retries,
            "backoff": Backoff(settings.api_retry_base_delay, settings.api_retry_max_delay),
            "max_connections": settings.api_max_connections,
        }
        options.update(overrides)
        return cls(**options)

    def with_credentials(
        self, credentials: Credentials, *, base_url: str | None = None, org_id: int | None = None
    ) -> CalcomClient:
        """A client for another account sharing this one's connection pool and policy."""
        twin = CalcomClient(
            base_url=base_url or self.base_url,
            credentials=credentials,
            org_id=org_id,
            http=self._http,
            retries=self.retries,
            backoff=self.backoff,
            gate=self.gate,
            sleep=self._sleep,
        )
        return twin

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def with_defaults(self, tool: Tool, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` plus the configured ``orgId`` where the tool takes one and it is absent."""
        merged = dict(params)
        if "orgId" in tool.by_name and "orgId" not in merged and self.org_id is not None:
            merged["orgId"] = self.org_id
        return merged

    async def call(self, tool: str | Tool, /, **params: Any) -> Any:
        """Call a tool and return Cal.com's ``data``."""
        return (await self.request(tool, params)).data

    async def request(self, tool: str | Tool, params: Mapping[str, Any]) -> CalcomResponse:
        """Call a tool and return the whole unwrapped answer."""
        spec = tool if isinstance(tool, Tool) else get_operation(tool)
        prepared = prepare_request(spec, self.with_defaults(spec, params))
        log = logger.bind(tool=spec.name)
        attempt = 0
        while True:
            try:
                response = await self._send(
                    spec, prepared.method, prepared.url, prepared.query, prepared.body
                )
            except (*_NEVER_SENT, *_MAYBE_SENT) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                safe = isinstance(exc, _NEVER_SENT) or spec.idempotent
                if not safe or attempt >= self.retries:
                    raise CalcomTransportError(spec.name, reason) from exc
                wait = self.backoff.delay(attempt)
                log.warning("calcom.retry", reason=reason, attempt=attempt + 1, wait=round(wait, 3))
            else:
                if response.is_success:
                    return self._unwrap(response)
                error = _error_from(spec, response)
                retryable = response.status_code == 429 or (
                    response.status_code >= 500 and spec.idempotent
                )
                asked = server_wait(response.headers, throttled=response.status_code == 429)
                error.retry_after = asked
                if not retryable or attempt >= self.retries:
                    raise error
                if asked is not None and asked > self.backoff.cap:
                    raise error  # the caller should defer, not hold this task for so long
                wait = asked if asked is not None else self.backoff.delay(attempt)
                log.warning(
                    "calcom.retry",
                    status=response.status_code,
                    code=error.code,
                    attempt=attempt + 1,
                    wait=round(wait, 3),
                )
            attempt += 1
            await self._sleep(wait)

    async def _send(
        self,
        tool: Tool,
        method: str,
        url: str,
        query: list[tuple[str, str]],
        body: dict[str, Any] | None,
    ) -> httpx.Response:
        if self.gate:
            await self.gate.before(tool)
        started = asyncio.get_running_loop().time()
        response: httpx.Response | None = None
        try:
            response = await self._http.request(
                method,
                self.base_url + url,
                params=tuple(query),
                json=body,
                headers=self.credentials.headers(),
            )
            return response
        finally:
            if self.gate:
                elapsed = asyncio.get_running_loop().time() - started
                await self.gate.after(tool, response, elapsed)

    @staticmethod
    def _unwrap(response: httpx.Response) -> CalcomResponse:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "data" in body:
            data, pagination = body["data"], body.get("pagination")
        else:
            data, pagination = body, None
        return CalcomResponse(
            status=response.status_code,
            data=data,
            pagination=pagination,
            request_id=response.headers.get("x-request-id"),
            headers=dict(response.headers),
        )

    async def paginate(
        self, tool: str | Tool, /, *, page_size: int | None = None, **params: Any
    ) -> AsyncIterator[Any]:
        """Yield every item of a take/skip list tool, fetching page after page."""
        spec = tool if isinstance(tool, Tool) else get_operation(tool)
        if not spec.paginated:
            raise ValueError(f"{spec.name} is not a paginated list tool")
        take = page_size or int(spec.by_name["take"].schema.get("maximum", 250))
        skip = int(params.pop("skip", 0))
        while True:
            page = await self.request(spec, {**params, "take": take, "skip": skip})
            items = page.data if isinstance(page.data, list) else []
            for item in items:
                yield item
            skip += len(items)
            has_next = (page.pagination or {}).get("hasNextPage")
            if has_next is False or (has_next is None and len(items) < take) or not items:
                return
