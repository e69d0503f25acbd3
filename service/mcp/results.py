"""Tool results as MCP wants them: Cal.com's ``data`` or a tool error with the facts.

Success: ``content[0].text`` is the JSON of Cal.com's ``data``; ``structuredContent`` is that
``data`` when it is an object. MCP requires ``structuredContent`` to be an object, so a
list (or ``null``) comes wrapped as ``{"data": ...}``, with Cal.com's ``pagination`` beside
it when Cal.com sent one.

Failure: ``isError: true``, a one-line explanation in ``content[0].text`` and the details in
``structuredContent.error`` - ``kind`` (``validation``, ``calcom``, ``unreachable``,
``connection``, ``internal``), plus the parameter names, or Cal.com's status, code, message
and request id (with ``retry_after`` seconds and ``retry_at``, an ISO 8601 time, when Cal.com
asked to wait). The credentials of the connection used are scrubbed from every result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import mcp_types as types

from calhooks.service.calcom.client import CalcomResponse
from calhooks.service.calcom.errors import CalcomError, CalcomTransportError, ToolValidationError
from calhooks.service.core.logs import REDACTED


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    return value


def _secrets(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(v for v in values if v)


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def success(
    response: CalcomResponse, *, secrets: Iterable[str | None] = ()
) -> types.CallToolResult:
    """Cal.com's ``data`` as structured content and as a JSON text block."""
    hidden = _secrets(secrets)
    data = _scrub(response.data, hidden)
    if isinstance(data, dict):
        structured: dict[str, Any] = data
    else:
        structured = {"data": data}
        if response.pagination is not None:
            structured["pagination"] = _scrub(dict(response.pagination), hidden)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=_text(data))],
        structured_content=structured,
    )


def failure(
    message: str, error: dict[str, Any], *, secrets: Iterable[str | None] = ()
) -> types.CallToolResult:
    """A tool error: ``message`` for people and models, ``error`` for programs."""
    hidden = _secrets(secrets)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=_scrub(message, hidden))],
        structured_content={"error": _scrub(error, hidden)},
        is_error=True,
    )


def validation_failure(
    exc: ToolValidationError, *, secrets: Iterable[str | None] = ()
) -> types.CallToolResult:
    problems = [{"parameter": p.parameter, "message": p.message} for p in exc.problems]
    listed = "; ".join(str(p) for p in exc.problems)
    return failure(
        f"Invalid arguments for {exc.tool}: {listed}. Nothing was sent to Cal.com.",
        {
            "kind": "validation",
            "tool": exc.tool,
            "parameters": list(exc.parameters),
            "problems": problems,
        },
        secrets=secrets,
    )


def calcom_failure(exc: CalcomError, *, secrets: Iterable[str | None] = ()) -> types.CallToolResult:
    reference = f" (request id {exc.request_id})" if exc.request_id else ""
    retry = ""
    retry_at = None
    if exc.retry_after is not None:
        retry_at = datetime.fromtimestamp(time.time() + exc.retry_after, UTC).isoformat(
            timespec="seconds"
        )
        retry = f" Retry after {exc.retry_after:g} s (at {retry_at})."
    error = {"kind": "calcom", **exc.to_dict(), "retry_after": exc.retry_after}
    if retry_at is not None:
        error["retry_at"] = retry_at
    return failure(
        f"Cal.com answered {exc.status} {exc.code}: {exc.message}{reference}.{retry}",
        error,
        secrets=secrets,
    )


def transport_failure(
    exc: CalcomTransportError, *, secrets: Iterable[str | None] = ()
) -> types.CallToolResult:
    return failure(
        f"Cal.com could not be reached for {exc.tool}: {exc.reason}",
        {"kind": "unreachable", "tool": exc.tool, "message": exc.reason},
        secrets=secrets,
    )


def connection_failure(message: str, **details: Any) -> types.CallToolResult:
    return failure(message, {"kind": "connection", "message": message, **details})


def internal_failure(tool: str, reference: str) -> types.CallToolResult:
    message = f"calhooks failed calling {tool} (internal error, reference {reference} in its logs)"
    return failure(message, {"kind": "internal", "tool": tool, "reference": reference})
