"""The API surface: one route per registry path, and the pipeline every call goes through.

Routes come from the tools registry (each ``Tool``'s method and path template); nothing
else lists the operations. Per call, in Cal.com's order: fault injection (a stand-in for
the network and servers in front of Cal.com), the throttler, authentication (401), the
organization and role guards (403), validation (400), then the operation (404, 409 ...).
Every answer carries ``X-Request-Id`` and, while throttling is on, the
``X-RateLimit-*-Default`` headers. Unknown paths and methods get NestJS's
``Cannot <METHOD> <path>`` 404.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from calhooks.service.calcom.tools import OPERATIONS, Tool
from calhooks.service.sandbox.auth import authenticate, authorize
from calhooks.service.sandbox.errors import (
    INTERNAL,
    THROTTLED,
    THROTTLED_MESSAGE,
    ApiError,
    bad_request,
    default_code,
    error_response,
    nest_details,
    not_found,
)
from calhooks.service.sandbox.faults import Effect
from calhooks.service.sandbox.operations import HANDLERS, Call, missing_handlers
from calhooks.service.sandbox.requestlog import RequestRecord
from calhooks.service.sandbox.sandbox import Sandbox
from calhooks.service.sandbox.validation import parse_request

logger = structlog.get_logger(__name__)

#: Scope key under which the app keeps the server's own ``send`` (to drop connections).
RAW_SEND = "calhooks.sandbox.raw_send"
_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


class DroppedConnection(Response):
    """Not an answer: the connection is closed without a byte sent back."""

    def __init__(self) -> None:
        super().__init__(status_code=503)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server_send = scope.get(RAW_SEND)
        # uvicorn's send is a bound method of the request cycle, which holds the transport.
        transport = getattr(getattr(server_send, "__self__", None), "transport", None)
        if transport is not None and hasattr(transport, "close"):
            transport.close()
            for _ in range(3):  # let connection_lost run, so uvicorn sees a disconnect
                await asyncio.sleep(0)
            return
        # Another server: promise a body and never send it, which also ends the connection.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
        )


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _fault_error(effect: Effect, limit: int) -> ApiError:
    status = effect.status or 500
    headers: dict[str, str] = {}
    if effect.retry_after is not None:
        headers["Retry-After"] = _format_seconds(effect.retry_after)
    if status == 429:
        if effect.reset is not None:
            headers.update(
                {
                    "X-RateLimit-Limit-Default": str(limit),
                    "X-RateLimit-Remaining-Default": "0",
                    "X-RateLimit-Reset-Default": _format_seconds(effect.reset),
                }
            )
        return ApiError(
            429, THROTTLED, THROTTLED_MESSAGE, nest_details(429, THROTTLED_MESSAGE), headers=headers
        )
    message = f"Sandbox fault injection answered {status}"
    return ApiError(
        status, default_code(status), message, nest_details(status, message), headers=headers
    )


def _json_body(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_request("The request body must be a JSON object")
    return value


def _loggable(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _tracker(request: Request) -> tuple[str, bool]:
    """Whom the throttler counts the request against, and whether it is a platform client."""
    authorization = request.headers.get("authorization")
    if authorization:
        return f"auth:{authorization}", False
    client_id = request.headers.get("x-cal-client-id")
    if client_id:
        return f"client:{client_id}", True
    return f"ip:{request.client.host if request.client else '?'}", False


class Api:
    """Serves the registry's operations against one ``Sandbox``."""

    def __init__(self, sandbox: Sandbox) -> None:
        missing = missing_handlers()
        if missing:
            raise RuntimeError(f"the sandbox has no handler for {', '.join(missing)}")
        self.sandbox = sandbox

    def routes(self) -> list[BaseRoute]:
        by_path: dict[str, dict[str, Tool]] = {}
        for tool in OPERATIONS.values():
            by_path.setdefault(tool.path, {})[tool.method] = tool

        # Literal segments first, so a fixed segment wins over a path variable.
        def specificity(path: str) -> tuple[int, int]:
            segments = path.strip("/").split("/")
            return (-sum(not s.startswith("{") for s in segments), -len(segments))

        routes: list[BaseRoute] = [
            Route(path, self._endpoint(by_path[path]), methods=_METHODS)
            for path in sorted(by_path, key=specificity)
        ]
        routes.append(Route("/{rest:path}", self._endpoint({}), methods=_METHODS))
        return routes

    def _endpoint(self, tools: Mapping[str, Tool]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.serve(request, tools.get(request.method))

        return endpoint

    async def serve(self, request: Request, tool: Tool | None) -> Response:
        started = time.perf_counter()
        raw = await request.body()
        record = RequestRecord(
            id=str(uuid.uuid4()),
            method=request.method,
            path=request.url.path,
            tool=tool.name if tool else None,
            query=list(request.query_params.multi_items()),
            body=_loggable(raw),
        )
        self.sandbox.requests.add(record)
        headers = {"X-Request-Id": record.id}
        try:
            response = await self._process(request, tool, raw, headers, record)
        except ApiError as error:
            response = error_response(request, error)
            response.headers.update(headers)
        except Exception:
            logger.exception("sandbox.operation_failed", tool=record.tool, path=record.path)
            response = error_response(request, ApiError(500, INTERNAL, "Internal server error"))
            response.headers.update(headers)
        if isinstance(response, DroppedConnection):
            record.dropped = True
        else:
            record.status = response.status_code
        record.duration = time.perf_counter() - started
        return response

    async def _process(
        self,
        request: Request,
        tool: Tool | None,
        raw: bytes,
        headers: dict[str, str],
        record: RequestRecord,
    ) -> Response:
        if tool is None:
            raise not_found(f"Cannot {request.method} {request.url.path}")
        sandbox = self.sandbox
        async with sandbox.faults.engage(tool.name, request.url.path) as effect:
            if effect.drop:
                record.faulted = True
                return DroppedConnection()
            if effect.status is not None:
                record.faulted = True
                raise _fault_error(effect, sandbox.limiter.config.limit)
            tracker, platform_client = _tracker(request)
            decision = sandbox.limiter.hit(tracker, platform_client=platform_client)
            if decision is not None:
                headers.update(decision.headers())
                if not decision.allowed:
                    raise ApiError(
                        429, THROTTLED, THROTTLED_MESSAGE, nest_details(429, THROTTLED_MESSAGE)
                    )
            store = sandbox.store
            caller = authenticate(store, request.headers)
            record.credential = caller.credential_id
            authorize(caller, tool.name, request.path_params["orgId"])
            params = parse_request(tool, request.path_params, record.query, _json_body(raw))
            call = Call(
                tool=tool,
                params=params,
                org=store.orgs[caller.org_id],
                caller=caller,
                store=store,
                events=sandbox,
                now=datetime.now(UTC),
            )
            result = HANDLERS[tool.name](call)
            content: dict[str, Any] = {"status": "success", "data": result.data}
            if result.pagination is not None:
                content["pagination"] = result.pagination
            return JSONResponse(content, status_code=tool.success_status, headers=headers)
