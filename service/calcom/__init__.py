"""Cal.com API v2 organization tools: the registry, the async client and their errors.

The client (httpx) and the parameter validation (jsonschema) are imported on first use of
their names: the web process reads the webhook wire format and the trigger list from this
package and never calls Cal.com while serving deliveries.
"""

from typing import TYPE_CHECKING, Any

from calhooks.service.calcom.backoff import Backoff, server_wait
from calhooks.service.calcom.errors import (
    CalcomError,
    CalcomTransportError,
    ParameterProblem,
    ToolError,
    ToolValidationError,
    UnknownToolError,
)
from calhooks.service.calcom.tools import TOOLS, Parameter, Tool, get_tool, tool_name

if TYPE_CHECKING:
    from calhooks.service.calcom.client import (
        CalcomClient,
        CalcomResponse,
        Credentials,
        RequestGate,
    )
    from calhooks.service.calcom.validation import (
        PreparedRequest,
        prepare_request,
        validate_params,
    )

_LAZY = {
    "CalcomClient": "client",
    "CalcomResponse": "client",
    "Credentials": "client",
    "RequestGate": "client",
    "PreparedRequest": "validation",
    "prepare_request": "validation",
    "validate_params": "validation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
