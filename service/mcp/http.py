"""The MCP server over streamable HTTP at ``/cal-organizations``, behind bearer tokens.

Stateless and JSON: every POST is a whole exchange (no ``Mcp-Session-Id``, no SSE: a GET,
which would open a server-to-client event stream, answers 405 with ``Allow: POST``), so a
plain JSON-RPC ``tools/list`` or ``tools/call`` with ``Accept: application/json`` gets a JSON
answer without an ``initialize`` first - what the catalog's clients send - and any web
replica can take any request. SDK clients (Claude Desktop, Cursor, the MCP Inspector)
work unchanged: they are answered in JSON too.

Auth: ``Authorization: Bearer <token>`` must match ``CALHOOKS_MCP_TOKEN`` or one of
``CALHOOKS_MCP_TOKENS`` (401 otherwise); the token's tenant travels to the tool handlers in
the ASGI scope. With no token configured the endpoint answers 503 rather than serving
anyone. An ``MCP-Protocol-Version`` header naming a revision the SDK does not speak answers
400 saying so and listing the ones it does (the SDK itself would complain about
``params._meta``). The SDK's Host/Origin (DNS rebinding) check is off: it guards unauthenticated
local servers, and a page in a browser cannot present a bearer token it does not know.

Composition: ``create_mcp_app(settings)`` returns an ASGI app whose ``lifespan()`` must be
entered by the hosting app's lifespan (the SDK's session manager runs a task group there);
``mcp_routes(app)`` gives the routes to add. ``create_standalone_app`` does both for
``calhooks mcp serve``.

Memory: with no token configured (the endpoint only answers 503) the MCP SDK is never
imported - it is the largest part of an idle ``calhooks serve`` otherwise (about 30 MB).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from calhooks.service.core.logs import register_secret
from calhooks.service.core.settings import Settings
from calhooks.service.mcp.tenants import TENANT_SCOPE_KEY, TokenTable

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

MCP_PATH = "/cal-organizations"

_UNAUTHORIZED = -32001  # JSON-RPC server error range, as other MCP servers use for auth
_INVALID_REQUEST = -32600
_VERSION_HEADER = "mcp-protocol-version"


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, code: int = _UNAUTHORIZED
) -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return Response(
        json.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _quiet_sdk_request_logs() -> None:
    """The SDK logs every stateless request at info ("Terminating session: None"); our own
    ``mcp.call`` line says more. Its warnings and errors still come through."""
    for name in ("mcp.server.streamable_http", "mcp.server.streamable_http_manager"):
        sdk_logger = logging.getLogger(name)
        if sdk_logger.level == logging.NOTSET:
            sdk_logger.setLevel(logging.WARNING)


class McpHttpApp:
    """ASGI app answering MCP at one path; enter ``lifespan()`` before serving requests."""

    def __init__(self, settings: Settings, *, redis: aioredis.Redis | None = None) -> None:
        self.tokens = TokenTable.from_settings(settings)
        for token in self.tokens.tenants_by_token:
            register_secret(token)
        #: The SDK's session manager; ``None`` (and the SDK not loaded) without a token.
        self.session_manager: StreamableHTTPSessionManager | None = None
        if self.tokens.configured:
            from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

            from calhooks.service.mcp.server import create_mcp_server

            _quiet_sdk_request_logs()
            server = create_mcp_server(settings, transport="http", redis=redis)
            self.session_manager = StreamableHTTPSessionManager(
                app=server, json_response=True, stateless=True, security_settings=None
            )

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run the SDK's session manager (and with it the server's lifespan) meanwhile."""
        if self.session_manager is None:
            yield
            return
        async with self.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope)
        refused = _refuse_method(request)
        if refused is not None:
            await refused(scope, receive, send)
            return
        if self.session_manager is None:
            response = _error(
                503, "MCP over HTTP is disabled: the server has no CALHOOKS_MCP_TOKEN"
            )
            await response(scope, receive, send)
            return
        tenant = self.tokens.tenant_for(request.headers.get("authorization"))
        if tenant is None:
            response = _error(
                401,
                "Unauthorized: send Authorization: Bearer <CALHOOKS_MCP_TOKEN>",
                {"WWW-Authenticate": 'Bearer realm="calhooks"'},
            )
            await response(scope, receive, send)
            return
        # After the token: an unauthenticated caller learns nothing about the server.
        refused = _refuse_version(request)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.session_manager.handle_request(
            {**scope, TENANT_SCOPE_KEY: tenant}, receive, send
        )


def _refuse_method(request: Request) -> Response | None:
    """A method other than POST (a GET asks for an event stream and a DELETE ends a session:
    this stateless server has neither), answered with what is wrong; ``None`` for a POST."""
    if request.method == "GET":
        return _error(
            405,
            "Method Not Allowed: this MCP endpoint is stateless and answers each POST in"
            " JSON; it opens no event stream (GET)",
            {"Allow": "POST"},
            code=_INVALID_REQUEST,
        )
    if request.method != "POST":
        return _error(
            405,
            f"Method Not Allowed: this MCP endpoint answers POST only (got {request.method});"
            " it is stateless, so there is no session to end",
            {"Allow": "POST"},
            code=_INVALID_REQUEST,
        )
    return None


def _refuse_version(request: Request) -> Response | None:
    """An unknown protocol revision, answered with the ones this server speaks; ``None`` for
    a request to hand to the SDK."""
    version = request.headers.get(_VERSION_HEADER)
    if version is None:
        return None
    # Imported here: the web process loads the MCP SDK only when the endpoint is in use.
    from mcp_types.version import KNOWN_PROTOCOL_VERSIONS

    if version not in KNOWN_PROTOCOL_VERSIONS:
        return _error(
            400,
            f"Unsupported MCP-Protocol-Version {version!r}: this server speaks"
            f" {', '.join(KNOWN_PROTOCOL_VERSIONS)}; send one of them, or no header",
            code=_INVALID_REQUEST,
        )
    return None


def create_mcp_app(settings: Settings, *, redis: aioredis.Redis | None = None) -> McpHttpApp:
    """The MCP endpoint as an ASGI app (mount it with ``mcp_routes``, run its lifespan)."""
    return McpHttpApp(settings, redis=redis)


def mcp_routes(app: McpHttpApp, path: str = MCP_PATH) -> list[BaseRoute]:
    """Routes serving ``app`` at ``path``, with or without a trailing slash (no redirect)."""
    return [Route(path, endpoint=app), Route(path + "/", endpoint=app)]


async def _livez(_: Request) -> Response:
    return PlainTextResponse("ok")


def create_standalone_app(settings: Settings) -> Starlette:
    """The MCP endpoint alone (``calhooks mcp serve``), with ``/livez``."""
    mcp = create_mcp_app(settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with mcp.lifespan():
            yield

    return Starlette(routes=[*mcp_routes(mcp), Route("/livez", _livez)], lifespan=lifespan)
