"""Redis connections: a configured URL, Sentinel settings for arq, and the embedded default."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pydantic import SecretStr

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.redisconn import (
    arq_redis_settings,
    create_redis,
    ensure_embedded_redis,
    redis_url,
)
from calhooks.service.core.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


async def test_configured_url_is_used(redis_server: EmbeddedRedis) -> None:
    config = settings(redis_url=SecretStr(redis_server.url))
    client = create_redis(config)
    assert await client.ping()
    await client.aclose()
    arq = arq_redis_settings(config)
    assert (arq.host, arq.port) == ("127.0.0.1", redis_server.port)


def test_sentinel_settings_for_arq() -> None:
    config = settings(
        redis_url=SecretStr("redis://:pw@ignored:6379/2"),
        redis_sentinels="s1:26379, s2:26380",
        redis_sentinel_master="calhooks",
    )
    arq = arq_redis_settings(config)
    assert arq.sentinel is True
    assert arq.host == [("s1", 26379), ("s2", 26380)]
    assert (arq.sentinel_master, arq.password, arq.database) == ("calhooks", "pw", 2)


async def test_embedded_redis_is_started_once_and_shared(tmp_path: Path) -> None:
    """Without a URL the first caller starts a redis-server on a unix socket; others reuse it."""
    config = settings(data_dir=tmp_path)
    url = redis_url(config)
    assert url == f"unix://{tmp_path}/redis/redis.sock"
    pid = int((tmp_path / "redis" / "redis.pid").read_text())
    try:
        assert ensure_embedded_redis(tmp_path) == url
        assert int((tmp_path / "redis" / "redis.pid").read_text()) == pid
        client = create_redis(config)
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        await client.aclose()
        assert arq_redis_settings(config).unix_socket_path == f"{tmp_path}/redis/redis.sock"
    finally:
        os.kill(pid, signal.SIGKILL)


async def test_clients_give_up_on_a_hung_redis() -> None:
    """A server that accepts and never answers: commands fail after the socket timeout."""
    import asyncio

    import pytest
    import redis.exceptions

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # read everything, answer nothing

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = create_redis(
        settings(redis_url=SecretStr(f"redis://127.0.0.1:{port}/0"), redis_socket_timeout=0.2)
    )
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            await asyncio.wait_for(client.get("calhooks:any"), 30)  # the bound is the client's
    finally:
        await client.aclose()
        server.close()


def test_sentinel_clients_carry_the_timeouts_too() -> None:
    """Sentinel lookups and the master connection both get socket and connect timeouts."""
    client = create_redis(
        settings(
            redis_sentinels="s1:26379",
            redis_socket_timeout=1.5,
            redis_connect_timeout=0.5,
        )
    )
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.5, 0.5)
    sentinel = client.connection_pool.sentinel_manager.sentinels[0]  # type: ignore[attr-defined]
    sentinel_kwargs = sentinel.connection_pool.connection_kwargs
    assert (sentinel_kwargs["socket_timeout"], sentinel_kwargs["socket_connect_timeout"]) == (
        1.5,
        0.5,
    )
