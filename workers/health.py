"""Each worker's own health: a tiny HTTP server for Kubernetes probes and Prometheus.

arq's health check is one Redis key per queue, deleted when any worker shuts down, so it
cannot tell one pod's health from another's. Each worker therefore answers for itself on
``CALHOOKS_WORKER_HTTP_PORT`` (9091):

* ``GET /livez`` - 200 while the worker's loop is turning (it polls at least every
  ``poll_delay``); touches nothing external, so a Redis outage does not restart every pod;
* ``GET /readyz`` - 200 once started, while Redis answers and the worker is taking jobs
  (503 during a SIGTERM drain);
* ``GET /metrics`` - Prometheus text format (``calhooks.workers.metrics``), with the queue's ready
  backlog and the dead-letter count refreshed on each scrape.

arq's own health key is also written per worker (``<queue>:health-check:<worker name>``,
every ``CALHOOKS_WORKER_HEALTH_INTERVAL`` seconds) for tools that read Redis.

The server is a few dozen lines on ``asyncio.start_server`` rather than uvicorn: it shares
the worker's event loop and must not install signal handlers over arq's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

logger = structlog.get_logger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_REQUEST_LINE = 8192


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Reply]]


class ProbeServer:
    """Serves ``GET`` on a few fixed paths, one short request per connection."""

    def __init__(self, routes: dict[str, Handler], *, host: str, port: int) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info("worker.http.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readuntil(b"\r\n")
                while (await reader.readuntil(b"\r\n")) not in (b"\r\n", b""):
                    pass
            reply = await self._answer(line)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        head = (
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, '')}\r\n"
            f"Content-Type: {reply.content_type}\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        method = line.split(b" ", 1)[0]
        writer.write(head if method == b"HEAD" else head + reply.body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _answer(self, line: bytes) -> Reply:
        parts = line[:_MAX_REQUEST_LINE].decode("latin-1").split()
        if len(parts) < 2:
            return Reply(404, b"not found\n")
        method, target = parts[0], parts[1].split("?", 1)[0]
        handler = self.routes.get(target)
        if handler is None:
            return Reply(404, b"not found\n")
        if method not in ("GET", "HEAD"):
            return Reply(405, b"method not allowed\n")
        try:
            return await handler()
        except Exception:  # a probe must answer, not drop the connection
            logger.exception("worker.http.error", path=target)
            return Reply(503, b"error\n")


class Liveness:
    """Alive while the worker's loop has turned within ``stale_after`` seconds."""

    def __init__(self, last_turn: Callable[[], float], stale_after: float) -> None:
        self.last_turn = last_turn
        self.stale_after = stale_after

    async def __call__(self) -> Reply:
        last = self.last_turn()
        age = asyncio.get_running_loop().time() - last if last else 0.0
        if age > self.stale_after:
            return Reply(503, f"stalled: loop last turned {age:.1f}s ago\n".encode())
        return Reply(200, b"ok\n")


class Readiness:
    """Ready once started, while Redis answers a PING and the worker takes jobs."""

    def __init__(self, ping: Callable[[], Awaitable[object]], taking_jobs: Callable[[], bool]):
        self.ping = ping
        self.taking_jobs = taking_jobs

    async def __call__(self) -> Reply:
        if not self.taking_jobs():
            return Reply(503, b"not taking jobs (starting or draining)\n")
        try:
            async with asyncio.timeout(2):
                await self.ping()
        except Exception as exc:  # any failure to reach Redis means not ready
            return Reply(503, f"redis: {type(exc).__name__}\n".encode())
        return Reply(200, b"ok\n")


class Metrics:
    """Refreshes the scrape-time gauges, then renders the registry."""

    def __init__(self, refresh: Callable[[], Awaitable[None]], render: Callable[[], bytes]):
        self.refresh = refresh
        self.render = render

    async def __call__(self) -> Reply:
        with contextlib.suppress(Exception):  # stale gauges beat a failed scrape
            async with asyncio.timeout(2):
                await self.refresh()
        return Reply(200, self.render(), "text/plain; version=0.0.4; charset=utf-8")
