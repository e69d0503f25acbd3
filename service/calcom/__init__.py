"""Cal.com API v2 organization tools: the registry, the async client and their errors.

Names are imported on first use (``__getattr__``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calhooks.service.calcom.backoff import Backoff, server_wait
    from calhooks.service.calcom.client import (
        CalcomClient,
        CalcomResponse,
        Credentials,
        RequestGate,
    )
    from calhooks.service.calcom.errors import (
        CalcomError,
        CalcomTransportError,
        ParameterProblem,
        ToolError,
        ToolValidationError,
        UnknownToolError,
    )
    from calhooks.service.calcom.tools import TOOLS, Parameter, Tool, get_tool, tool_name
    from calhooks.service.calcom.validation import PreparedRequest, prepare_request, validate_params

__all__ = [
    "TOOLS",
    "Backoff",
    "CalcomClient",
    "CalcomError",
    "CalcomResponse",
    "CalcomTransportError",
    "Credentials",
    "Parameter",
    "ParameterProblem",
    "PreparedRequest",
    "RequestGate",
    "Tool",
    "ToolError",
    "ToolValidationError",
    "UnknownToolError",
    "get_tool",
    "prepare_request",
    "server_wait",
    "tool_name",
    "validate_params",
]

#: Where each name lives: imported on first use, so the registry alone (``calhooks tools
#: list``) does not pay for the HTTP client.
_HOMES = {
    "Backoff": "calhooks.service.calcom.backoff",
    "CalcomClient": "calhooks.service.calcom.client",
    "CalcomError": "calhooks.service.calcom.errors",
    "CalcomResponse": "calhooks.service.calcom.client",
    "CalcomTransportError": "calhooks.service.calcom.errors",
    "Credentials": "calhooks.service.calcom.client",
    "Parameter": "calhooks.service.calcom.tools",
    "ParameterProblem": "calhooks.service.calcom.errors",
    "PreparedRequest": "calhooks.service.calcom.validation",
    "RequestGate": "calhooks.service.calcom.client",
    "TOOLS": "calhooks.service.calcom.tools",
    "Tool": "calhooks.service.calcom.tools",
    "ToolError": "calhooks.service.calcom.errors",
    "ToolValidationError": "calhooks.service.calcom.errors",
    "UnknownToolError": "calhooks.service.calcom.errors",
    "get_tool": "calhooks.service.calcom.tools",
    "prepare_request": "calhooks.service.calcom.validation",
    "server_wait": "calhooks.service.calcom.backoff",
    "tool_name": "calhooks.service.calcom.tools",
    "validate_params": "calhooks.service.calcom.validation",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(home), name)


def __dir__() -> list[str]:
    return sorted(__all__)
