"""The pipelined Redis connection: ordering, errors, deadlines, reconnects, URLs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port, redis_server_binary
from calhooks.service.intake.redispipe import (
    RedisAddress,
    RedisDeadline,
    RedisPipe,
    RedisReplyError,
    RedisUnavailable,
    Script,
    pack,
)
from tests.intake.conftest import command


@pytest.fixture
async def pipe(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[RedisPipe]:
    client = RedisPipe(RedisAddress.from_url(redis_server.url))
    yield client
    await client.aclose()


def test_commands_are_packed_as_resp() -> None:
    """Bytes, text, integers and floats become RESP bulk strings."""
    assert b"".join(pack(["SET", b"k\r\n", 12, 1.5])) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n1.5\r\n"
    )


async def test_concurrent_commands_get_their_own_replies(pipe: RedisPipe) -> None:
    """Commands sent in one loop turn share a write; each caller gets its reply, in order."""
    results = await asyncio.gather(*(pipe.execute("INCR", "counter") for _ in range(200)))
    assert results == list(range(1, 201))
    assert await pipe.execute("GET", "counter") == b"200"


async def test_error_replies_raise_and_the_stream_stays_in_step(pipe: RedisPipe) -> None:
    """An error reply fails only its own command."""
    await pipe.execute("SET", "text", "abc")
    replies: tuple[Any, ...] = await asyncio.gather(
        pipe.execute("GET", "text"), pipe.execute("INCR", "text"), pipe.execute("STRLEN", "text"),
        return_exceptions=True,
    )  # fmt: skip
    assert replies[0] == b"abc"
    assert isinstance(replies[1], RedisReplyError)
    assert "not an integer" in str(replies[1])
    assert replies[2] == 3


async def test_scripts_load_themselves_after_a_flush(
    pipe: RedisPipe, redis_client: aioredis.Redis
) -> None:
    """EVALSHA falls back to EVAL when the server forgot the script (restart, failover)."""
    script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await pipe.evalsha(script, ["n"], [2], deadline=5) == 2
    await redis_client.script_flush()
    assert await pipe.evalsha(script, ["n"], [3], deadline=5) == 5
    assert await pipe.evalsha(script, ["n"], [1], deadline=5) == 6


async def test_a_late_reply_is_dropped_and_later_commands_still_match(pipe: RedisPipe) -> None:
    """A command past its deadline raises RedisDeadline; its eventual reply is discarded."""
    with pytest.raises(RedisDeadline):
        await pipe.execute("BLPOP", "nothing", "0.3", deadline=0.05)
    assert await pipe.execute("ECHO", "after", deadline=5) == b"after"


async def test_a_killed_connection_fails_in_flight_commands_then_reconnects(
    pipe: RedisPipe, redis_client: aioredis.Redis
) -> None:
    """The server dropping the connection fails what was in flight; the next command works."""
    await pipe.execute("CLIENT", "SETNAME", "intake-pipe")
    waiting = asyncio.create_task(pipe.execute("BLPOP", "nothing", "5"))
    await asyncio.sleep(0.05)
    await command(redis_client, "CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    with pytest.raises(RedisUnavailable):
        await waiting
    assert await pipe.execute("PING") == b"PONG"


async def test_unreachable_redis_is_unavailable() -> None:
    """Nothing listening: RedisUnavailable at once; ping says False."""
    pipe = RedisPipe(RedisAddress.from_url(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await pipe.execute("PING", deadline=2)
    assert await pipe.ping(1) is False
    await pipe.aclose()
    with pytest.raises(RedisUnavailable, match="closed"):
        await pipe.execute("PING")


class PasswordRedis(EmbeddedRedis):
    """A redis-server that requires a password."""

    def command(self) -> list[str]:
        return [*super().command(), "--requirepass", "s3cret-pw"]

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                sock.sendall(b"AUTH s3cret-pw\r\nPING\r\n")
                time.sleep(0.01)
                return b"+PONG" in sock.recv(64)
        except OSError:
            return False


@pytest.fixture
def password_redis() -> Iterator[PasswordRedis]:
    with PasswordRedis() as server:
        yield server


@pytest.mark.parametrize("user", ["", "default"])
async def test_password_and_database_from_the_url(password_redis: PasswordRedis, user: str) -> None:
    """AUTH (with or without a user name) and SELECT come from the URL."""
    url = f"redis://{user}:s3cret-pw@127.0.0.1:{password_redis.port}/3"
    pipe = RedisPipe(RedisAddress.from_url(url))
    assert await pipe.execute("SET", "where", "db3", deadline=5) == b"OK"
    await pipe.aclose()
    check = aioredis.Redis.from_url(url)
    assert await check.get("where") == b"db3"
    await check.aclose()
    wrong = RedisPipe(RedisAddress.from_url(f"redis://:nope@127.0.0.1:{password_redis.port}/0"))
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await wrong.execute("PING", deadline=5)
    await wrong.aclose()


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[Path]:
    """A redis-server listening only on a unix socket."""
    socket_path = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", str(socket_path), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield socket_path
    finally:
        process.kill()
        process.wait()


async def test_unix_socket(unix_redis: Path) -> None:
    """unix:// URLs connect over the socket."""
    pipe = RedisPipe(RedisAddress.from_url(f"unix://{unix_redis}?db=2"))
    for _ in range(500):
        if await pipe.ping(1):
            break
        await asyncio.sleep(0.01)
    assert await pipe.execute("SET", "k", "v") == b"OK"
    assert b" db=2 " in await pipe.execute("CLIENT", "INFO")
    await pipe.aclose()


def test_addresses_describe_themselves_without_credentials() -> None:
    """Logs see where Redis is, never the password."""
    address = RedisAddress.from_url("rediss://user:pw@cache.example:6380/4?ssl_cert_reqs=none")
    assert (address.tls, address.tls_verify, address.db, address.port) == (True, False, 4, 6380)
    assert "pw" not in address.describe()
    assert RedisAddress(sentinels=(("s1", 26379),)).describe() == "sentinel master mymaster"


@pytest.fixture
def sentinel(tmp_path: Path, redis_server: EmbeddedRedis) -> Iterator[int]:
    """A redis-sentinel watching the suite's Redis as master ``mymaster``."""
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen(
        [redis_server_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.02)
        yield port
    finally:
        process.kill()
        process.wait()


async def test_the_master_is_found_through_sentinel(
    sentinel: int, redis_client: aioredis.Redis
) -> None:
    """With sentinels configured the pipe asks them for the master and talks to it."""
    address = RedisAddress(sentinels=(("127.0.0.1", sentinel),), sentinel_master="mymaster")
    pipe = RedisPipe(address)
    assert await pipe.execute("SET", "via", "sentinel", deadline=5) == b"OK"
    assert await command(redis_client, "GET", "via") == b"sentinel"
    await pipe.aclose()
