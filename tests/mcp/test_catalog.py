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
        registry = _plain(spec.input_schema["properties"])
        assert isinstance(registry, dict)
        assert set(properties) == set(registry)
        for name, prop in properties.items():
            if prop != registry[name]:  # only the nullable ones differ: single-typed
                assert registry[name]["type"] == [prop["type"], "null"], (tool.name, name)
                assert prop["enum" if "enum" in prop else "type"] is not None
        assert schema["required"] == [*spec.required, PCID]
        assert schema["additionalProperties"] is False
        assert tool.description == f"{spec.summary}\n\n{spec.method} {spec.path}"


def _nodes(value: object) -> list[dict[str, object]]:
    if isinstance(value, dict):
        return [value, *(n for item in value.values() for n in _nodes(item))]
    if isinstance(value, list):
        return [n for item in value for n in _nodes(item)]
    return []


def test_every_schema_node_has_one_type() -> None:
    """What the Inspector's strict check asks: no `type` lists, in inputs or outputs, and no
    null in an input's enum (theme, appTheme and locale were `["string", "null"]`)."""
    for tool in mcp_tools(pcid_required=True):
        for schema in (tool.input_schema, tool.output_schema):
            for node in _nodes(schema):
                assert not isinstance(node.get("type"), list), (tool.name, node)
        for node in _nodes(tool.input_schema):
            enum = node.get("enum")
            assert not isinstance(enum, list) or None not in enum, (tool.name, node)
    users = {t.name: t for t in mcp_tools(pcid_required=True)}
    create = users["cal_organizations_users_controller_create_organization_user"].input_schema
    assert create["properties"]["theme"] == {
        "type": "string",
        "description": "Theme",
        "enum": ["light", "dark"],
    }
    assert create["properties"]["locale"]["type"] == "string"


def test_every_tool_has_an_object_output_schema() -> None:
    """outputSchema: Cal.com's data when it is an object, else {data, pagination?}."""
    for tool in mcp_tools(pcid_required=True):
        assert tool.output_schema is not None, tool.name
        assert tool.output_schema["type"] == "object", tool.name
    by_name = {t.name: t for t in mcp_tools(pcid_required=True)}
    listed = by_name["cal_organizations_users_ooocontroller_get_organization_user_ooo"]
    assert listed.output_schema is not None
    assert listed.output_schema["required"] == ["data"]
    assert listed.output_schema["properties"]["data"]["type"] == "array"


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
