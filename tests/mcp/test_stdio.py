"""MCP over stdio: ``python -m calhooks.service mcp`` spawned by the SDK's stdio client."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from calhooks.service.core.settings import Settings
from calhooks.service.mcp.catalog import PCID
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID
from tests.mcp import scenarios
from tests.mcp.conftest import Pcids
from tests.sandbox.server import RunningSandbox

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def spawned(env: dict[str, str], tmp_path: Path) -> AsyncIterator[Client]:
    """An SDK client session with a freshly spawned ``calhooks mcp`` (stderr to a file)."""
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "calhooks.service", "mcp"],
        cwd=ROOT,
        env={
            "CALHOOKS_LOG_FORMAT": "json",
            "CALHOOKS_LOG_LEVEL": "warning",
            "CALHOOKS_DATA_DIR": str(tmp_path / "data"),
            "CALHOOKS_API_RETRIES": "0",
            **env,
        },
    )
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(server, errlog=errlog), mode="legacy") as client:
            yield client


def connection_env(settings: Settings) -> dict[str, str]:
    assert settings.redis_url is not None
    assert settings.encryption_key is not None
    return {
        "CALHOOKS_API_URL": settings.api_url,
        "CALHOOKS_REDIS_URL": settings.redis_url.get_secret_value(),
        "CALHOOKS_ENCRYPTION_KEY": settings.encryption_key.get_secret_value(),
    }


async def test_stdio_serves_the_tools_with_pcids(
    mcp_settings: Settings, sandbox: RunningSandbox, pcids: Pcids, tmp_path: Path
) -> None:
    """Over stdio: 37 tools, the OOO lifecycle, validation, 404, PCID errors, two orgs."""
    async with spawned(connection_env(mcp_settings), tmp_path) as client:
        await scenarios.check_tool_list(client)
        await scenarios.check_ooo_lifecycle(client, sandbox, pcids.acme)
        await scenarios.check_output_schemas(client, pcids.acme)
        await scenarios.check_validation_error(client, sandbox, pcids.acme)
        await scenarios.check_not_found(client, pcids.acme)
        await scenarios.check_missing_and_unknown_pcid(client, sandbox)
        # stdio is the local owner's: any tenant's connection may be used.
        other = await client.call_tool(scenarios.LIST_USERS, {PCID: pcids.globex_tenant})
        assert len(scenarios.data_of(other)) == 2


async def test_stdio_keeps_two_orgs_apart(
    mcp_settings: Settings, sandbox: RunningSandbox, pcids: Pcids, tmp_path: Path
) -> None:
    """Two PCIDs, two keys, two orgs, over stdio too."""
    async with spawned(connection_env(mcp_settings), tmp_path) as client:
        await scenarios.check_orgs_apart(client, sandbox, pcids)


async def test_single_key_mode_needs_no_pcid_and_no_redis(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    """With CALHOOKS_API_KEY set, PCID is optional and calls use that key; Redis stays off."""
    env = {
        "CALHOOKS_API_URL": sandbox.url,
        "CALHOOKS_API_KEY": SANDBOX_API_KEY,
        "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
    }
    embedded = tmp_path / "data" / "redis"
    try:
        async with spawned(env, tmp_path) as client:
            await scenarios.check_tool_list(client, pcid_required=False)
            users = scenarios.data_of(await client.call_tool(scenarios.LIST_USERS, {"take": 10}))
            assert sorted(u["username"] for u in users) == ["alice", "bob", "carol"]
            unknown = await client.call_tool(scenarios.LIST_USERS, {PCID: "nope"})
            assert "CALHOOKS_ENCRYPTION_KEY" in scenarios.error_of(unknown)["message"]
        assert [r.credential for r in sandbox.requests()] == ["key-acme-admin"]
        assert not embedded.exists()
    finally:  # had it started after all, do not leave a redis-server behind
        if (embedded / "redis.pid").exists():
            os.kill(int((embedded / "redis.pid").read_text()), signal.SIGTERM)
