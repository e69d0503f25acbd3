"""tools/list as generated from the registry: names, schemas plus PCID, behaviour hints."""

from __future__ import annotations

from collections.abc import Mapping

from calhooks.service.calcom.tools import TOOLS
from calhooks.service.mcp.catalog import PCID, mcp_tools


def test_every_registry_tool_and_nothing_else() -> None:
    """The 37 registry tools, by their catalog names, in registry order."""
    tools = mcp_tools(pcid_required=True)
    assert len(tools) == 37
    assert [tool.name for tool in tools] == list(TOOLS)


def test_schema_is_the_registry_schema_plus_a_required_pcid() -> None:
    """Each inputSchema is Tool.input_schema with one more property, PCID, required."""
    for tool in mcp_tools(pcid_required=True):
        spec = TOOLS[tool.name]
        schema = dict(tool.input_schema)
        properties = dict(schema.pop("properties"))
        assert properties.pop(PCID)["type"] == "string"
        assert properties == _plain(spec.input_schema["properties"])
        assert schema["required"] == [*spec.required, PCID]
        assert schema["additionalProperties"] is False
        assert tool.description == f"{spec.summary}\n\n{spec.method} {spec.path}"


def test_pcid_is_optional_in_single_key_mode() -> None:
    """With a key of the server's own (stdio), PCID is offered but not required."""
    for tool in mcp_tools(pcid_required=False):
        assert PCID in tool.input_schema["properties"]
        assert PCID not in tool.input_schema["required"]
        assert tool.input_schema["required"] == list(TOOLS[tool.name].required)


def test_annotations_follow_the_http_method() -> None:
    """GET is read-only, DELETE destructive, everything but POST idempotent."""
    hints = {
        tool.name: (
            tool.annotations.read_only_hint,
            tool.annotations.destructive_hint,
            tool.annotations.idempotent_hint,
        )
        for tool in mcp_tools(pcid_required=True)
        if tool.annotations is not None
    }
    assert len(hints) == 37
    expected = {
        "GET": (True, False, True),
        "POST": (False, False, False),
        "PATCH": (False, False, True),
        "DELETE": (False, True, True),
    }
    assert hints == {name: expected[spec.method] for name, spec in TOOLS.items()}


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
