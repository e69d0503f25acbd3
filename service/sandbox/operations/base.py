"""What every operation handler gets and returns, and how handlers are bound to tools.

A handler is a plain function ``(Call) -> Result`` registered with ``@operation(tool_name)``;
the tool name is checked against the registry at import. Handlers run on the server's
event loop and never await, so each call's changes to the store are atomic. They raise
``ApiError`` (404, 409, business-rule 400s) and may emit webhook events through
``Call.events``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from calhooks.service.calcom.tools import Tool, get_operation
from calhooks.service.sandbox.auth import Caller
from calhooks.service.sandbox.state import Organization, Store

T = TypeVar("T")


class Events(Protocol):
    """Where handlers send webhook events (the sandbox delivers them in the background)."""

    def emit(self, org_id: int, trigger: str, body: Mapping[str, Any]) -> object: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One authorized, validated call of a tool."""

    tool: Tool
    params: Mapping[str, Any]
    org: Organization
    caller: Caller
    store: Store
    events: Events
    now: datetime

    def body(self) -> dict[str, Any]:
        """The call's body parameters (after whitelisting; defaults filled in on create)."""
        return {
            p.name: self.params[p.name]
            for p in self.tool.parameters_in("body")
            if p.name in self.params
        }


@dataclass(frozen=True, slots=True)
class Result:
    data: Any
    pagination: Mapping[str, Any] | None = None


Handler = Callable[[Call], Result]

#: Every tool's handler, by tool name.
HANDLERS: dict[str, Handler] = {}


def operation(tool_name: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``tool_name``."""
    get_operation(tool_name)  # an unknown name fails at import, with suggestions

    def register(handler: Handler) -> Handler:
        if tool_name in HANDLERS:
            raise RuntimeError(f"{tool_name} has two handlers")
        HANDLERS[tool_name] = handler
        return handler

    return register


def page(items: Sequence[T], params: Mapping[str, Any], default_take: int = 250) -> list[T]:
    """The ``take``/``skip`` slice of ``items``."""
    skip = int(params.get("skip") or 0)
    take = int(params.get("take") or default_take)
    return list(items[skip : skip + take])
