"""The calhooks MCP server: the 37 Cal.com organization tools, a connection picked per call.

Built on the SDK's low-level ``mcp.server.Server``: the tools come from the registry with
explicit JSON Schemas (``calhooks.service.mcp.catalog``), so there is nothing for a decorator-based
framework to infer. ``tools/call`` takes the ``PCID`` argument out, resolves it to a
connection of the caller's tenant, and calls Cal.com through one pooled ``CalcomClient``
(``with_credentials`` per call). Every failure - a bad or unknown PCID, invalid arguments,
a Cal.com error, Cal.com unreachable, a rate limit that would hold the call more than
``MAX_WAIT_SECONDS`` (the error says when to retry), even a bug - comes back as a tool result
with ``isError: true``; only an unknown tool name is a JSON-RPC error, as the MCP spec asks.

Transports: streamable HTTP (``calhooks.service.mcp.http``, caller's tenant from its bearer token)
and stdio (``calhooks.service.mcp.stdio``, a local user who may use any connection, and who may
omit the PCID when ``CALHOOKS_API_KEY`` or a platform client is configured).
"""

from __future__ import annotations

import secrets as _secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import anyio.to_thread
import mcp_types as types
import redis.asyncio as aioredis
import structlog
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from redis.exceptions import RedisError

from calhooks.service.calcom.backoff import Backoff
from calhooks.service.calcom.client import CalcomClient, Credentials
from calhooks.service.calcom.errors import (
    CalcomError,
    CalcomTransportError,
    ToolValidationError,
    UnknownToolError,
)
from calhooks.service.calcom.tools import TOOLS, get_tool
from calhooks.service.connections.store import (
    Connection,
    ConnectionStore,
    ConnectionStoreError,
    secret_box,
)
from calhooks.service.core.redisconn import create_redis, redis_url
from calhooks.service.core.settings import Settings
from calhooks.service.mcp import results
from calhooks.service.mcp.catalog import PCID, input_schema, mcp_tools
from calhooks.service.mcp.tenants import TENANT_SCOPE_KEY

logger = structlog.get_logger(__name__)

Transport = Literal["http", "stdio"]

#: Longest wait (Cal.com's Retry-After, a back-off) a tool call sits through before answering.
MAX_WAIT_SECONDS = 5.0

_MAX_PCID = 128  # PCIDs are 36 characters; longer input is not worth a Redis lookup

SERVER_NAME = "calhooks"
INSTRUCTIONS = (
    "The 37 Cal.com organization API tools (attributes, attribute options, memberships, "
    "users, out-of-office entries, webhooks, managed organizations, delegation credentials). "
    "Every call acts for one Cal.com account, picked by the PCID argument: the connection id "
    "printed by `calhooks connections add`. Results are Cal.com's `data`."
)


def _server_version() -> str:
    try:
        return version("calhooks")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


def has_own_credentials(settings: Settings) -> bool:
    """Whether the settings carry a Cal.com API key or platform client of their own."""
    return bool(settings.api_key or (settings.client_id and settings.client_secret))


class LazyConnections:
    """The connection store, opened on the first PCID (stdio with one key needs no Redis)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        self._settings = settings
        self._redis = redis
        self._owns_redis = redis is None
        self._store: ConnectionStore | None = None
        self._lock = anyio.Lock()

    async def store(self) -> ConnectionStore:
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                box = secret_box(self._settings)  # no key: fail before touching Redis
                if self._redis is None:
                    # May start the embedded redis-server: a blocking subprocess.
                    url = await anyio.to_thread.run_sync(redis_url, self._settings)
                    self._redis = create_redis(self._settings, url=url)
                self._store = ConnectionStore(self._redis, box)
            return self._store

    async def aclose(self) -> None:
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()


@dataclass(frozen=True)
class ToolRuntime:
    """What the server's lifespan opens once: the pooled Cal.com client and the store."""

    calcom: CalcomClient
    connections: LazyConnections


class _Refused(Exception):
    """A call that cannot go ahead for want of a usable connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ToolHandlers:
    """``tools/list`` and ``tools/call`` for one transport."""

    def __init__(self, settings: Settings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        #: stdio with a key of the server's own: PCID may be omitted.
        self.single_key = transport == "stdio" and has_own_credentials(settings)
        self.tools = mcp_tools(pcid_required=not self.single_key)
        # Arguments are validated against the registry's schemas (nullable where Cal.com
        # takes null); tools/list shows them single-typed (calhooks.service.mcp.catalog).
        self._schemas = {
            tool.name: input_schema(tool, pcid_required=not self.single_key, listed=False)
            for tool in TOOLS.values()
        }

    def input_schema(self, name: str) -> dict[str, Any] | None:
        return self._schemas.get(name)

    async def list_tools(
        self, ctx: ServerRequestContext[ToolRuntime], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools)

    async def call_tool(
        self, ctx: ServerRequestContext[ToolRuntime], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            tool = get_tool(params.name)
        except UnknownToolError as exc:
            raise MCPError(code=types.INVALID_PARAMS, message=str(exc)) from None
        arguments = dict(params.arguments or {})
        pcid = arguments.pop(PCID, None)
        tenant = self._tenant(ctx)
        log = logger.bind(tool=tool.name, transport=self.transport, tenant=tenant)
        started = time.perf_counter()
        try:
            client, connection = await self._client_for(ctx.lifespan_context, pcid, tenant)
        except _Refused as refused:
            log.info("mcp.call_refused", reason=refused.message)
            return results.connection_failure(refused.message, parameter=PCID)
        hidden = _credential_values(client.credentials)
        if connection is not None:
            log = log.bind(connection=connection.info.name, pcid=connection.info.pcid[:8])
        try:
            response = await client.request(tool, arguments)
        except ToolValidationError as exc:
            log.info("mcp.call_invalid", parameters=list(exc.parameters))
            return results.validation_failure(exc, secrets=hidden)
        except CalcomError as exc:
            log.info("mcp.call_failed", status=exc.status, code=exc.code, request_id=exc.request_id)
            return results.calcom_failure(exc, secrets=hidden)
        except CalcomTransportError as exc:
            log.warning("mcp.call_unreachable", reason=exc.reason)
            return results.transport_failure(exc, secrets=hidden)
        except Exception:
            reference = _secrets.token_hex(4)
            log.exception("mcp.call_crashed", reference=reference)
            return results.internal_failure(tool.name, reference)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        log.info("mcp.call", status=response.status, elapsed_ms=elapsed_ms)
        return results.success(response, secrets=hidden)

    def _tenant(self, ctx: ServerRequestContext[ToolRuntime]) -> str | None:
        """The caller's tenant over HTTP (set by the auth layer); ``None`` on stdio."""
        if self.transport == "stdio":
            return None
        request = ctx.request
        scope = getattr(request, "scope", None)
        tenant = scope.get(TENANT_SCOPE_KEY) if isinstance(scope, dict) else None
        return tenant if isinstance(tenant, str) else None

    async def _client_for(
        self, runtime: ToolRuntime, pcid: Any, tenant: str | None
    ) -> tuple[CalcomClient, Connection | None]:
        if pcid is None or pcid == "":
            if self.single_key:
                return runtime.calcom, None
            raise _Refused(
                "PCID is required: pass the connection id of the Cal.com account to act "
                "for (create one with `calhooks connections add NAME --api-key -` (key on stdin))."
            )
        if not isinstance(pcid, str):
            raise _Refused(f"PCID must be a string, got {type(pcid).__name__}")
        if len(pcid) > _MAX_PCID:
            raise _Refused(f"unknown PCID: no connection id is {len(pcid)} characters long")
        if self.transport == "http" and tenant is None:
            raise _Refused("this request carries no tenant")
        try:
            store = await runtime.connections.store()
            connection = await store.get(pcid, tenant=tenant)
        except ConnectionStoreError as exc:
            raise _Refused(str(exc)) from exc
        except (RedisError, OSError) as exc:
            logger.warning("mcp.store_unavailable", error=type(exc).__name__)
            raise _Refused(
                "the connection store (Redis) is unavailable; try again shortly"
            ) from exc
        if connection is None:
            raise _Refused(
                f"unknown PCID {pcid!r}: no such connection for this token "
                "(list them with `calhooks connections list`)"
            )
        client = runtime.calcom.with_credentials(
            connection.credentials,
            base_url=connection.info.base_url,
            org_id=connection.info.org_id,
        )
        return client, connection


def _credential_values(credentials: Credentials) -> tuple[str | None, ...]:
    return (credentials.api_key, credentials.client_secret)


def create_mcp_server(
    settings: Settings, *, transport: Transport, redis: aioredis.Redis | None = None
) -> Server[ToolRuntime]:
    """The low-level MCP server serving the 37 tools over ``transport``.

    ``redis`` (optional) is a client to share for the connection store; without it the
    server opens its own from the settings on the first PCID it sees.
    """
    handlers = ToolHandlers(settings, transport)

    @asynccontextmanager
    async def lifespan(_: Server[ToolRuntime]) -> AsyncIterator[ToolRuntime]:
        # A client waits for no one: past MAX_WAIT_SECONDS (a rate limit's Retry-After, a
        # back-off) the call ends at once with a tool error saying when to retry.
        backoff = Backoff(
            settings.api_retry_base_delay, min(settings.api_retry_max_delay, MAX_WAIT_SECONDS)
        )
        calcom = CalcomClient.from_settings(settings, backoff=backoff)
        connections = LazyConnections(settings, redis)
        try:
            yield ToolRuntime(calcom=calcom, connections=connections)
        finally:
            await connections.aclose()
            await calcom.aclose()

    return Server[ToolRuntime](
        SERVER_NAME,
        version=_server_version(),
        title="calhooks: Cal.com organization tools",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        get_tool_input_schema=handlers.input_schema,
        on_list_tools=handlers.list_tools,
        on_call_tool=handlers.call_tool,
    )
