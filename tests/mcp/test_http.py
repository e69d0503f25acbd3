"""MCP over streamable HTTP at /cal-organizations: SDK clients, raw JSON-RPC, bearer auth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from structlog.testing import capture_logs

from calhooks.service.app import create_app
from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.core.embedded_redis import free_port
from calhooks.service.core.settings import Settings
from calhooks.service.mcp.catalog import PCID
from calhooks.service.mcp.http import MCP_PATH, create_standalone_app
from calhooks.service.mcp.server import MAX_WAIT_SECONDS
from calhooks.service.sandbox import SANDBOX_API_KEY, RateLimit
from tests.mcp import scenarios
from tests.mcp.conftest import GLOBEX_TOKEN, TOKEN, Pcids
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app

JSON_ONLY = {"Accept": "application/json", "Content-Type": "application/json"}


def rpc(method: str, params: dict[str, Any] | None = None, id_: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return message


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sdk_client_lists_the_37_tools(mcp_url: str, mode: str) -> None:
    """Both protocol eras (handshake and 2026 per-request) list the registry's tools."""
    async with scenarios.http_client(mcp_url, mode=mode) as client:
        await scenarios.check_tool_list(client)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_ooo_lifecycle_through_a_pcid(
    mcp_url: str, sandbox: RunningSandbox, pcids: Pcids, mode: str
) -> None:
    """Create, list, update and delete an OOO entry with Acme's PCID."""
    async with scenarios.http_client(mcp_url, mode=mode) as client:
        await scenarios.check_ooo_lifecycle(client, sandbox, pcids.acme)


async def test_validation_error_names_the_parameters(
    mcp_url: str, sandbox: RunningSandbox, pcids: Pcids
) -> None:
    """Invalid arguments are a tool error naming them; Cal.com is not called."""
    async with scenarios.http_client(mcp_url) as client:
        await scenarios.check_validation_error(client, sandbox, pcids.acme)


async def test_calcom_404_is_a_tool_error(mcp_url: str, pcids: Pcids) -> None:
    """A Cal.com 404 carries status, code and message in the tool error."""
    async with scenarios.http_client(mcp_url) as client:
        await scenarios.check_not_found(client, pcids.acme)


async def test_missing_or_unknown_pcid_is_a_tool_error(
    mcp_url: str, sandbox: RunningSandbox, pcids: Pcids
) -> None:
    """Without a usable PCID the call is refused as a tool error, never a crash."""
    async with scenarios.http_client(mcp_url) as client:
        await scenarios.check_missing_and_unknown_pcid(client, sandbox)


async def test_two_pcids_for_two_orgs_stay_apart(
    mcp_url: str, sandbox: RunningSandbox, pcids: Pcids
) -> None:
    """Acme's and Globex's PCIDs each call with their own key and org."""
    async with scenarios.http_client(mcp_url) as client:
        await scenarios.check_orgs_apart(client, sandbox, pcids)


async def test_a_token_only_reaches_its_tenants_connections(
    mcp_url: str, sandbox: RunningSandbox, pcids: Pcids
) -> None:
    """Tenant globex's token: its own PCID works, tenant default's PCID is unknown."""
    async with scenarios.http_client(mcp_url, token=GLOBEX_TOKEN) as client:
        theirs = await client.call_tool(scenarios.LIST_USERS, {PCID: pcids.globex_tenant})
        assert len(scenarios.data_of(theirs)) == 2
        foreign = await client.call_tool(scenarios.LIST_USERS, {PCID: pcids.acme, "orgId": 1})
        assert "unknown PCID" in scenarios.error_of(foreign)["message"]
    assert [r.credential for r in sandbox.requests()] == ["key-globex-admin"]


async def test_raw_json_rpc_with_accept_json_only(mcp_url: str, pcids: Pcids) -> None:
    """A bare POST (no initialize, no session, Accept: application/json) gets JSON back."""
    headers = {**JSON_ONLY, "Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        listed = await http.post(mcp_url, json=rpc("tools/list"))
        assert listed.status_code == 200
        assert listed.headers["content-type"].startswith("application/json")
        assert "mcp-session-id" not in listed.headers
        tools = listed.json()["result"]["tools"]
        assert len(tools) == 37
        assert all(PCID in tool["inputSchema"]["required"] for tool in tools)

        called = await http.post(
            mcp_url,
            json=rpc(
                "tools/call",
                {"name": scenarios.LIST_USERS, "arguments": {PCID: pcids.acme, "take": 2}},
                id_=7,
            ),
        )
        assert called.status_code == 200
        answer = called.json()
        assert answer["id"] == 7
        result = answer["result"]
        assert result.get("isError", False) is False
        users = result["structuredContent"]["data"]
        assert [u["username"] for u in users] == ["alice", "bob"]
        assert json.loads(result["content"][0]["text"]) == users

        failed = await http.post(
            mcp_url,
            json=rpc("tools/call", {"name": scenarios.LIST_USERS, "arguments": {"take": 2}}),
        )
        assert failed.json()["result"]["isError"] is True

        unknown_tool = await http.post(
            mcp_url, json=rpc("tools/call", {"name": "cal_nope", "arguments": {}})
        )
        assert unknown_tool.status_code == 200
        assert "unknown tool 'cal_nope'" in unknown_tool.json()["error"]["message"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789abcdef", f"Basic {TOKEN}", f"Bearer {TOKEN}x"],
)
async def test_requests_without_the_bearer_token_get_401(
    mcp_url: str, sandbox: RunningSandbox, pcids: Pcids, authorization: str | None
) -> None:
    """No token, a wrong one or another scheme: 401 before anything runs."""
    headers = dict(JSON_ONLY)
    if authorization:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        response = await http.post(
            mcp_url,
            json=rpc("tools/call", {"name": scenarios.LIST_USERS, "arguments": {PCID: pcids.acme}}),
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["message"].startswith("Unauthorized")
    assert sandbox.requests() == []


async def test_without_a_configured_token_the_endpoint_is_off(mcp_settings: Settings) -> None:
    """No CALHOOKS_MCP_TOKEN(S): 503 for everyone rather than an open endpoint."""
    settings = mcp_settings.model_copy(update={"mcp_token": None, "mcp_tokens": None})
    with serve_app(create_standalone_app(settings)) as url:
        async with httpx.AsyncClient(headers=JSON_ONLY, timeout=30) as http:
            response = await http.post(url + MCP_PATH, json=rpc("tools/list"))
            trailing = await http.post(url + MCP_PATH + "/", json=rpc("tools/list"))
    assert response.status_code == trailing.status_code == 503
    assert "CALHOOKS_MCP_TOKEN" in response.json()["error"]["message"]


async def test_trailing_slash_is_served_without_a_redirect(mcp_url: str) -> None:
    """Clients configured with /cal-organizations/ work too."""
    headers = {**JSON_ONLY, "Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        response = await http.post(mcp_url + "/", json=rpc("tools/list"))
    assert response.status_code == 200
    assert len(response.json()["result"]["tools"]) == 37


async def test_keys_never_reach_results_or_logs(
    mcp_url: str, sandbox: RunningSandbox, pcids: Pcids
) -> None:
    """Successful and failed calls log and answer without the connection's API key."""
    with capture_logs() as logs:
        async with scenarios.http_client(mcp_url) as client:
            results = [
                await client.call_tool(scenarios.LIST_USERS, {PCID: pcids.acme}),
                await client.call_tool(
                    scenarios.DELETE_OOO,
                    {PCID: pcids.acme, "userId": scenarios.CAROL, "oooId": 1},
                ),
                await client.call_tool(scenarios.LIST_USERS, {PCID: pcids.acme, "take": 0}),
            ]
    assert [bool(r.is_error) for r in results] == [False, True, True]
    scenarios.assert_no_keys(*results)
    calls = [entry for entry in logs if entry["event"].startswith("mcp.call")]
    assert [entry["event"] for entry in calls] == [
        "mcp.call",
        "mcp.call_failed",
        "mcp.call_invalid",
    ]
    assert all(entry["connection"] == "acme" for entry in calls)
    assert SANDBOX_API_KEY not in repr(logs)


async def test_unreachable_calcom_is_a_tool_error(mcp_url: str, store: ConnectionStore) -> None:
    """A connection whose Cal.com does not answer gets an `unreachable` tool error."""
    dead = await store.add(
        "dead",
        Credentials(api_key=SANDBOX_API_KEY),
        org_id=1,
        base_url=f"http://127.0.0.1:{free_port()}",
    )
    async with scenarios.http_client(mcp_url) as client:
        result = await client.call_tool(scenarios.LIST_USERS, {PCID: dead.pcid})
    error = scenarios.error_of(result)
    assert error["kind"] == "unreachable"
    assert error["tool"] == scenarios.LIST_USERS
    assert "ConnectError" in error["message"]
    scenarios.assert_no_keys(result)


async def test_the_web_app_serves_mcp_beside_the_intake(
    mcp_settings: Settings, pcids: Pcids, tmp_path: Path
) -> None:
    """`calhooks serve`'s app answers MCP at /cal-organizations, behind the same token."""
    settings = mcp_settings.model_copy(update={"data_dir": tmp_path})
    with serve_app(create_app(settings)) as url:
        async with scenarios.http_client(url + MCP_PATH) as client:
            await scenarios.check_tool_list(client)
            users = await client.call_tool(scenarios.LIST_USERS, {PCID: pcids.acme})
            assert len(scenarios.data_of(users)) == 3
        async with httpx.AsyncClient(headers=JSON_ONLY, timeout=30) as http:
            refused = await http.post(url + MCP_PATH, json=rpc("tools/list"))
            assert refused.status_code == 401
            assert (await http.get(url + "/livez")).status_code == 200


async def test_dot_segment_id_is_refused_and_nothing_is_sent(
    mcp_url: str, sandbox: RunningSandbox, pcids: Pcids
) -> None:
    """attributeId '.' would have read GET /v2/organizations/1 instead of an attribute."""
    sandbox.sandbox.requests.clear()
    async with scenarios.http_client(mcp_url) as client:
        result = await client.call_tool(
            "cal_organizations_attributes_controller_get_organization_attribute",
            {PCID: pcids.acme, "attributeId": "."},
        )
    assert result.is_error
    assert "attributeId" in json.dumps(result.model_dump(mode="json"))
    assert sandbox.requests() == []


async def test_get_is_405_not_an_endless_stream(mcp_url: str) -> None:
    """No event stream: a GET answers at once, 405 with Allow: POST, saying why."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        answer = await http.get(mcp_url)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert "opens no event stream" in answer.json()["error"]["message"]


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH"])
async def test_other_methods_are_405_at_once(mcp_url: str, method: str) -> None:
    """Not held open by the SDK: any method but POST answers 405 with Allow: POST."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        answer = await http.request(method, mcp_url)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert method in answer.json()["error"]["message"]


@pytest.mark.parametrize("version", ["1999-01-01", "latest"])
async def test_an_unknown_protocol_version_header_says_what_is_wrong(
    mcp_url: str, version: str
) -> None:
    """Not a message about params._meta: the header's value, and the versions spoken."""
    headers = {**JSON_ONLY, "Authorization": f"Bearer {TOKEN}", "MCP-Protocol-Version": version}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        answer = await http.post(mcp_url, json=rpc("tools/list"))
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert message.startswith(f"Unsupported MCP-Protocol-Version {version!r}")
    assert "2025-06-18" in message
    assert "_meta" not in message


async def test_the_token_is_checked_before_the_protocol_version(mcp_url: str) -> None:
    """No token and a bad version: 401, so an unauthenticated caller learns nothing else."""
    headers = {**JSON_ONLY, "MCP-Protocol-Version": "1999-01-01"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        answer = await http.post(mcp_url, json=rpc("tools/list"))
    assert answer.status_code == 401
    assert "Unsupported" not in answer.text


async def test_a_long_rate_limit_wait_is_a_tool_error_saying_when(
    mcp_settings: Settings, sandbox: RunningSandbox, pcids: Pcids
) -> None:
    """Cal.com asks to wait 20 s: the call does not hold the client, it says when to retry."""
    sandbox.sandbox.limiter.configure(RateLimit(limit=1, window=20))
    settings = mcp_settings.model_copy(update={"api_retries": 3})
    with serve_app(create_standalone_app(settings)) as url:
        async with scenarios.http_client(url + MCP_PATH) as client:
            arguments = {PCID: pcids.acme, "take": 1}
            scenarios.data_of(await client.call_tool(scenarios.LIST_USERS, arguments))
            throttled = await client.call_tool(scenarios.LIST_USERS, arguments)
    error = scenarios.error_of(throttled)
    assert error["status"] == 429
    assert error["retry_after"] > MAX_WAIT_SECONDS
    assert "retry_at" in error
    text = throttled.content[0]
    assert isinstance(text, types.TextContent)
    assert f"(at {error['retry_at']})" in text.text
    assert len(sandbox.requests(scenarios.LIST_USERS)) == 2  # no retry after the 429
