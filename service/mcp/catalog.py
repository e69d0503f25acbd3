"""The MCP view of the tools registry: one ``mcp_types.Tool`` per ``calcom.TOOLS`` entry.

Nothing here is written per tool. Each MCP tool takes its name, summary, method and path
from the registry, its input schema from ``Tool.input_schema`` (the real parameter names,
types, required lists, enums and constraints) plus the ``PCID`` argument that picks the
connection, its output schema from Cal.com's response schema (``Tool.response_schema``: what
``structuredContent`` holds, see ``calhooks.service.mcp.results``), and its behaviour hints
from the HTTP method: GET is read-only, DELETE is destructive, everything but POST is
idempotent. All 37 talk to Cal.com (open world).

Schemas use one type per node, as clients that map JSON Schema to a single-type dialect (and
the MCP Inspector's strict check) require: an input's ``type: ["string", "null"]`` becomes
``type: "string"`` (the server still accepts ``null`` there), an output's becomes
``anyOf: [{"type": "string"}, {"type": "null"}]`` (Cal.com does answer ``null``).
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


def _single_types(value: Any, *, keep_null: bool) -> Any:
    """``value`` (a plain schema) with every ``type: [T, "null"]`` made single-typed: ``T``
    (``keep_null=False``), or ``anyOf`` of ``T`` and ``null`` (``keep_null=True``)."""
    if isinstance(value, list):
        return [_single_types(item, keep_null=keep_null) for item in value]
    if not isinstance(value, dict):
        return value
    node = {key: _single_types(item, keep_null=keep_null) for key, item in value.items()}
    kinds = node.get("type")
    if not isinstance(kinds, list):
        return node
    others = [kind for kind in kinds if kind != "null"]
    if "enum" in node:
        node["enum"] = [item for item in node["enum"] if item is not None]
    if len(others) == 1 and not keep_null:
        node["type"] = others[0]
        return node
    branches = [
        {**{k: v for k, v in node.items() if k not in ("type", "description")}, "type": t}
        for t in others
    ]
    if keep_null and "null" in kinds:
        branches.append({"type": "null"})
    if len(branches) == 1:
        return {
            **branches[0],
            **({"description": node["description"]} if "description" in node else {}),
        }
    merged: dict[str, Any] = {"anyOf": branches}
    if "description" in node:
        merged["description"] = node["description"]
    return merged


def output_schema(tool: Tool) -> dict[str, Any]:
    """What ``structuredContent`` holds on success: Cal.com's ``data`` when it is an object,
    else ``{"data": ..., "pagination"?: ...}`` (``calhooks.service.mcp.results.success``)."""
    response: dict[str, Any] = _plain(tool.response_schema or {})
    data = response.get("properties", {}).get("data", {})
    if _is_object(data):
        return _object_schema(_single_types(data, keep_null=True))
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {"data": _single_types(data, keep_null=True)},
        "required": ["data"],
    }
    pagination = response.get("properties", {}).get("pagination")
    if pagination is not None:
        wrapped["properties"]["pagination"] = _single_types(pagination, keep_null=True)
    return wrapped


def _is_object(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "object":
        return True
    parts: list[dict[str, Any]] = schema.get("allOf") or []
    return bool(parts) and all(_is_object(part) for part in parts)


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema with ``type: "object"`` at its root (``allOf`` of objects merged)."""
    if "allOf" not in schema:
        return schema
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for part in schema["allOf"]:
        part = _object_schema(part)
        merged["properties"].update(part.get("properties", {}))
        merged["required"] += [r for r in part.get("required", []) if r not in merged["required"]]
    if "description" in schema:
        merged["description"] = schema["description"]
    return merged


def input_schema(tool: Tool, *, pcid_required: bool, listed: bool = True) -> dict[str, Any]:
    """``tool.input_schema`` plus the ``PCID`` string property (required unless told not):
    single-typed as ``tools/list`` shows it, or as is (``listed=False``: what arguments are
    validated against, so ``null`` stays accepted where Cal.com takes it)."""
    schema: dict[str, Any] = _plain(tool.input_schema)
    if listed:
        schema = _single_types(schema, keep_null=False)
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
        output_schema=output_schema(tool),
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
