"""Fixtures for the MCP server: settings aimed at the sandbox, stored connections, a server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.secretbox import generate_key
from calhooks.service.core.settings import Settings
from calhooks.service.mcp.http import MCP_PATH, create_standalone_app
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID, SECOND_API_KEY, SECOND_ORG_ID
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app

#: Bearer token of the tenant ``default``.
TOKEN = "mcp-test-token-default-0123456789"
#: Bearer token of the tenant ``globex``.
GLOBEX_TOKEN = "mcp-test-token-globex-0123456789"


@dataclass(frozen=True)
class Pcids:
    """PCIDs of the stored connections: two orgs in tenant ``default``, one in ``globex``."""

    acme: str
    globex: str
    globex_tenant: str


@pytest.fixture
def mcp_settings(redis_server: EmbeddedRedis, sandbox: RunningSandbox) -> Settings:
    """Settings for an MCP server on the suite's Redis, calling the sandbox."""
    return Settings(
        _env_file=None,
        redis_url=redis_server.url,
        encryption_key=generate_key(),
        api_url=sandbox.url,
        api_retries=0,
        mcp_token=TOKEN,
        mcp_tokens=f"globex:{GLOBEX_TOKEN}",
    )


@pytest.fixture
def store(mcp_settings: Settings, redis_client: aioredis.Redis) -> ConnectionStore:
    return ConnectionStore.from_settings(mcp_settings, redis_client)


@pytest.fixture
async def pcids(store: ConnectionStore) -> Pcids:
    """Acme and Globex stored for tenant ``default``; Globex again for tenant ``globex``."""
    acme = await store.add("acme", Credentials(api_key=SANDBOX_API_KEY), org_id=SANDBOX_ORG_ID)
    globex = await store.add("globex", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID)
    other = await store.add(
        "globex", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID, tenant="globex"
    )
    return Pcids(acme=acme.pcid, globex=globex.pcid, globex_tenant=other.pcid)


@pytest.fixture
def mcp_url(mcp_settings: Settings) -> Iterator[str]:
    """The MCP endpoint served alone on loopback (``calhooks mcp serve``'s app)."""
    with serve_app(create_standalone_app(mcp_settings)) as url:
        yield url + MCP_PATH
