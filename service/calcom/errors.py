"""Errors raised by the tools registry and the Cal.com client.

``ToolError`` is the base for anything that goes wrong calling a tool, so a caller (CLI,
worker, MCP server) can catch one type and still tell the cases apart:

* ``UnknownToolError`` - no tool by that name;
* ``ToolValidationError`` - parameters rejected before anything was sent;
* ``CalcomError`` - Cal.com answered with a non-2xx status;
* ``CalcomTransportError`` - no answer at all (connection refused, timeout) after retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ToolError(Exception):
    """Base class of every error calling a Cal.com tool."""


class UnknownToolError(ToolError, KeyError):
    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = f" (did you mean {', '.join(self.suggestions)}?)" if self.suggestions else ""
        super().__init__(f"unknown tool {name!r}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class ParameterProblem:
    """What is wrong with one parameter (``parameter`` is ``None`` for the call as a whole)."""

    parameter: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.parameter}: {self.message}" if self.parameter else self.message


class ToolValidationError(ToolError, ValueError):
    def __init__(self, tool: str, problems: Sequence[ParameterProblem]) -> None:
        self.tool = tool
        self.problems = tuple(problems)
        super().__init__(f"{tool}: " + "; ".join(str(p) for p in self.problems))

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(p.parameter for p in self.problems if p.parameter)


class CalcomError(ToolError):
    """Cal.com answered a tool call with a non-2xx status.

    ``code`` and ``message`` come from Cal.com's error body
    (``{"status": "error", "error": {"code", "message", "details"}}``);
    ``request_id`` from its ``X-Request-Id`` header.
    """

    def __init__(
        self,
        *,
        tool: str,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.tool = tool
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id
        self.headers = dict(headers or {})
        #: Seconds Cal.com asked us to wait (Retry-After / rate-limit reset), if it said.
        self.retry_after: float | None = None
        super().__init__(f"{tool}: Cal.com answered {status} {code}: {message}")

    @property
    def retryable(self) -> bool:
        """429 and 5xx may succeed later; other 4xx will fail the same way again."""
        return self.status == 429 or self.status >= 500

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "request_id": self.request_id,
        }


class CalcomTransportError(ToolError):
    """Cal.com could not be reached (or did not answer in time) after every attempt."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"{tool}: Cal.com unreachable: {reason}")

    retryable = True
