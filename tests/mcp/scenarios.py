"""What an MCP client should see from calhooks, whatever the transport (HTTP or stdio).

Each ``check_*`` drives an SDK ``Client`` against a server calling the sandbox Cal.com and
asserts on the answers and on what the sandbox received.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
from jsonschema import Draft202012Validator
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from calhooks.service.calcom.tools import TOOLS
from calhooks.service.mcp.catalog import PCID
from calhooks.service.sandbox import SANDBOX_API_KEY, SECOND_API_KEY
from tests.mcp.conftest import TOKEN, Pcids
from tests.sandbox.server import RunningSandbox

CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
LIST_OOO = "cal_organizations_users_ooocontroller_get_organization_user_ooo"
UPDATE_OOO = "cal_organizations_users_ooocontroller_update_organization_user_ooo"
DELETE_OOO = "cal_organizations_users_ooocontroller_delete_organization_user_ooo"
LIST_USERS = "cal_organizations_users_controller_get_organizations_users"

CAROL = 103  # an Acme member (sandbox seed)


@asynccontextmanager
async def http_client(url: str, token: str = TOKEN, mode: str = "legacy") -> AsyncIterator[Client]:
    """An SDK client session over streamable HTTP, sending ``token`` as its bearer."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def error_of(result: types.CallToolResult) -> dict[str, Any]:
    """The ``structuredContent.error`` of a tool error (asserting it is one)."""
    assert result.is_error, result
    assert isinstance(result.structured_content, dict)
    error: dict[str, Any] = result.structured_content["error"]
    return error


def data_of(result: types.CallToolResult) -> Any:
    """Cal.com's ``data`` from a successful result, checking text and structure agree."""
    assert not result.is_error, result.content
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    data = json.loads(text.text)
    structured = result.structured_content
    assert structured == (data if isinstance(data, dict) else {"data": data})
    return data


def assert_no_keys(*results: types.CallToolResult) -> None:
    dumped = "".join(r.model_dump_json() for r in results)
    assert SANDBOX_API_KEY not in dumped
    assert SECOND_API_KEY not in dumped


async def check_tool_list(client: Client, *, pcid_required: bool = True) -> None:
    """Exactly the 37 registry tools, each schema the registry's plus PCID."""
    listed = await client.list_tools()
    assert [tool.name for tool in listed.tools] == list(TOOLS)
    for tool in listed.tools:
        spec = TOOLS[tool.name]
        properties = dict(tool.input_schema["properties"])
        assert properties.pop(PCID)["type"] == "string"
        registry = json.loads(json.dumps(spec.input_schema["properties"], default=dict))
        assert set(properties) == set(registry)
        for name, prop in properties.items():  # nullable ones are listed single-typed
            assert prop == registry[name] or registry[name]["type"] == [prop["type"], "null"]
        assert tool.output_schema is not None
        assert tool.output_schema["type"] == "object"
        required = [*spec.required, PCID] if pcid_required else list(spec.required)
        assert tool.input_schema["required"] == required
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is spec.read_only
        assert tool.annotations.destructive_hint is spec.destructive
        assert tool.annotations.idempotent_hint is spec.idempotent


def conforms(result: types.CallToolResult, tool: types.Tool) -> types.CallToolResult:
    """``result``'s ``structuredContent`` validates against ``tool``'s ``outputSchema``."""
    assert tool.output_schema is not None
    Draft202012Validator(tool.output_schema).validate(result.structured_content)
    return result


async def check_output_schemas(client: Client, pcid: str) -> None:
    """Successful results validate against the outputSchema tools/list gave for the tool."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    user = {PCID: pcid, "orgId": 1, "userId": CAROL}

    async def call(name: str, arguments: dict[str, Any]) -> Any:
        return data_of(conforms(await client.call_tool(name, arguments), tools[name]))

    await call(LIST_USERS, {PCID: pcid, "orgId": 1})
    created = await call(
        CREATE_OOO,
        {**user, "start": "2032-01-02T00:00:00.000Z", "end": "2032-01-03T00:00:00.000Z"},
    )
    await call(LIST_OOO, user)
    await call(UPDATE_OOO, {**user, "oooId": created["id"], "notes": "checked"})
    await call(DELETE_OOO, {**user, "oooId": created["id"]})
    await call(
        "cal_organizations_attributes_controller_get_organization_attributes",
        {PCID: pcid, "orgId": 1},
    )
    await call(
        "cal_organizations_webhooks_controller_get_all_organization_webhooks",
        {PCID: pcid, "orgId": 1},
    )


async def check_ooo_lifecycle(client: Client, sandbox: RunningSandbox, pcid: str) -> None:
    """Create, list, update and delete an OOO entry through one PCID."""
    user = {PCID: pcid, "orgId": 1, "userId": CAROL}
    created = data_of(
        await client.call_tool(
            CREATE_OOO,
            {
                **user,
                "start": "2031-03-02T00:00:00.000Z",
                "end": "2031-03-06T00:00:00.000Z",
                "reason": "vacation",
                "notes": "via MCP",
            },
        )
    )
    assert (created["userId"], created["reason"], created["notes"]) == (
        CAROL,
        "vacation",
        "via MCP",
    )
    ooo_id = created["id"]
    assert ooo_id in sandbox.store.ooo

    listed = data_of(await client.call_tool(LIST_OOO, {**user, "sortStart": "desc"}))
    assert ooo_id in [entry["id"] for entry in listed]

    updated = data_of(
        await client.call_tool(UPDATE_OOO, {**user, "oooId": ooo_id, "reason": "travel"})
    )
    assert (updated["id"], updated["reason"], updated["notes"]) == (ooo_id, "travel", "via MCP")
    assert sandbox.store.ooo[ooo_id].reason == "travel"

    deleted = data_of(await client.call_tool(DELETE_OOO, {**user, "oooId": ooo_id}))
    assert deleted["id"] == ooo_id
    assert ooo_id not in sandbox.store.ooo
    remaining = data_of(await client.call_tool(LIST_OOO, user))
    assert ooo_id not in [entry["id"] for entry in remaining]
    assert {r.credential for r in sandbox.requests()} == {"key-acme-admin"}


async def check_validation_error(client: Client, sandbox: RunningSandbox, pcid: str) -> None:
    """Bad arguments name each parameter, and nothing reaches Cal.com."""
    sent_before = len(sandbox.requests())
    result = await client.call_tool(
        CREATE_OOO,
        {
            PCID: pcid,
            "orgId": 1,
            "userId": "carol",
            "start": "2031-03-02",
            "end": "2031-03-06T00:00:00.000Z",
            "reason": "holiday",
            "mood": "sunny",
        },
    )
    error = error_of(result)
    assert error["kind"] == "validation"
    assert error["tool"] == CREATE_OOO
    assert sorted(error["parameters"]) == ["mood", "reason", "start", "userId"]
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    assert "start" in text.text
    assert "'holiday' is not one of" in text.text
    assert len(sandbox.requests()) == sent_before


async def check_not_found(client: Client, pcid: str) -> None:
    """Cal.com's 404 comes back as a tool error with its status, code and message."""
    result = await client.call_tool(
        DELETE_OOO, {PCID: pcid, "orgId": 1, "userId": CAROL, "oooId": 987654}
    )
    error = error_of(result)
    assert error["kind"] == "calcom"
    assert error["status"] == 404
    assert error["code"] == "NotFoundException"
    assert "987654" in error["message"]
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    assert text.text.startswith("Cal.com answered 404 NotFoundException")
    assert_no_keys(result)


async def check_missing_and_unknown_pcid(client: Client, sandbox: RunningSandbox) -> None:
    """No PCID, an unknown one, or one of the wrong type: tool errors naming PCID."""
    sent_before = len(sandbox.requests())
    arguments = {"orgId": 1, "take": 5}
    missing = error_of(await client.call_tool(LIST_USERS, arguments))
    assert missing["kind"] == "connection"
    assert missing["parameter"] == PCID
    assert "PCID is required" in missing["message"]
    unknown = error_of(await client.call_tool(LIST_USERS, {**arguments, PCID: "not-a-pcid"}))
    assert "unknown PCID 'not-a-pcid'" in unknown["message"]
    typed = error_of(await client.call_tool(LIST_USERS, {**arguments, PCID: 42}))
    assert "PCID must be a string" in typed["message"]
    huge = error_of(await client.call_tool(LIST_USERS, {**arguments, PCID: "x" * 5000}))
    assert huge["message"] == "unknown PCID: no connection id is 5000 characters long"
    assert len(sandbox.requests()) == sent_before


async def check_orgs_apart(client: Client, sandbox: RunningSandbox, pcids: Pcids) -> None:
    """Two PCIDs call Cal.com with their own keys and default to their own orgs."""
    acme = data_of(await client.call_tool(LIST_USERS, {PCID: pcids.acme, "orgId": 1}))
    globex = data_of(await client.call_tool(LIST_USERS, {PCID: pcids.globex, "orgId": 2}))
    assert sorted(u["username"] for u in acme) == ["alice", "bob", "carol"]
    assert sorted(u["username"] for u in globex) == ["dave", "erin"]
    # orgId omitted: the connection's own org is used.
    defaulted = data_of(await client.call_tool(LIST_USERS, {PCID: pcids.globex}))
    assert sorted(u["username"] for u in defaulted) == ["dave", "erin"]
    # Globex's key cannot read Acme: Cal.com refuses, and the tool error says so.
    refused = error_of(await client.call_tool(LIST_USERS, {PCID: pcids.globex, "orgId": 1}))
    assert refused["status"] == 403
    seen = [(r.credential, r.path) for r in sandbox.requests(LIST_USERS)]
    assert seen == [
        ("key-acme-admin", "/v2/organizations/1/users"),
        ("key-globex-admin", "/v2/organizations/2/users"),
        ("key-globex-admin", "/v2/organizations/2/users"),
        ("key-globex-admin", "/v2/organizations/1/users"),
    ]
