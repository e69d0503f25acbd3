"""The MCP view of the tools registry: one ``mcp_types.Tool`` per ``calcom.TOOLS`` entry.

Nothing here is written per tool. Each MCP tool takes its name, summary, method and path
from the registry, its input schema from ``Tool.input_schema`` (the real parameter names,
types, required lists, enums and constraints) plus the ``PCID`` argument that picks the
connection, and its behaviour hints from the HTTP method: GET is read-only, DELETE is
destructive, everything but POST is idempotent. All 37 talk to Cal.com (open world).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mcp_types as types

from calhooks.service.calcom.tools import TOOLS, Tool

PCID = "PCID"

_PCID_HELP = (
    "Connection id (PCID) of the Cal.com account to act for, as printed by "
    "`calhooks connections add`."
)
_PCID_OPTIONAL_HELP = _PCID_HELP + " Omit it to use the server's own CALHOOKS_API_KEY."


def _plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (the registry hands out read-only views)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def input_schema(tool: Tool, *, pcid_required: bool) -> dict[str, Any]:
    """``tool.input_schema`` plus the ``PCID`` string property (required unless told not)."""
    schema: dict[str, Any] = _plain(tool.input_schema)
    schema["properties"][PCID] = {
        "type": "string",
        "minLength": 1,
        "description": _PCID_HELP if pcid_required else _PCID_OPTIONAL_HELP,
    }
    if pcid_required:
        schema["required"] = [*schema["required"], PCID]
    return schema


def description(tool: Tool) -> str:
    return f"{tool.summary or tool.name}\n\n{tool.method} {tool.path}"


def mcp_tool(tool: Tool, *, pcid_required: bool) -> types.Tool:
    """The MCP description of one registry tool."""
    return types.Tool(
        name=tool.name,
        title=tool.summary or None,
        description=description(tool),
        input_schema=input_schema(tool, pcid_required=pcid_required),
        annotations=types.ToolAnnotations(
            title=tool.summary or None,
            read_only_hint=tool.read_only,
            destructive_hint=tool.destructive,
            idempotent_hint=tool.idempotent,
            open_world_hint=True,
        ),
    )


def mcp_tools(*, pcid_required: bool) -> list[types.Tool]:
    """Every registry tool, in the registry's (name) order."""
    return [mcp_tool(tool, pcid_required=pcid_required) for tool in TOOLS.values()]
