"""Fixtures shared by the whole suite: a real redis-server of the suite's own, log capture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.sandbox import create_app
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A redis-server started by the tests on a free port (never the machine's 6379)."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A client to the suite's Redis, flushed before each test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[RunningSandbox]:
    """The suite's sandbox Cal.com, served by uvicorn on a loopback port for the session."""
    app = create_app()
    with serve_app(app) as url:
        yield RunningSandbox(url, app, app.state.sandbox)


@pytest.fixture
def sandbox(sandbox_server: RunningSandbox) -> RunningSandbox:
    """The sandbox Cal.com reset to its seed: fresh data, logs, faults; Cal.com's rate limit."""
    sandbox_server.sandbox.reset(seeded=True)
    return sandbox_server
