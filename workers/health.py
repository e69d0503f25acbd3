"""Each worker's own health: a small HTTP server for Kubernetes probes and Prometheus.

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

The server is ``aiohttp.web`` (aiohttp is already loaded for the Cal.com calls) through an
``AppRunner``: it shares the worker's event loop and installs no signal handlers over arq's.
A hand-written ``asyncio.start_server`` version was measured against it and saved too
little to keep (``bench/handwritten.py probes``, docs/performance-handwritten.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Reply]]


class ProbeServer:
    """Serves ``GET`` and ``HEAD`` on a few fixed paths (anything else: 404 or 405)."""

    def __init__(self, routes: dict[str, Handler], *, host: str, port: int) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        for path, handler in self.routes.items():
            app.router.add_get(path, self._view(path, handler))  # HEAD too
        # A probe in flight is bounded by its handler's own 2 s timeout; never wait longer.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        logger.info("worker.http.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _view(path: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(_: web.Request) -> web.Response:
            try:
                reply = await handler()
            except Exception:  # a probe must answer, not drop the connection
                logger.exception("worker.http.error", path=path)
                reply = Reply(503, b"error\n")
            return web.Response(
                status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
            )

        return answer


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
