"""Cal.com API v2 organization tools: the registry, the async client and their errors."""

from calhooks.service.calcom.backoff import Backoff, server_wait
from calhooks.service.calcom.client import CalcomClient, CalcomResponse, Credentials, RequestGate
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
