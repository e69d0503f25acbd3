"""The web application ``calhooks serve`` runs: intake, probes, metrics, and whatever is mounted.

``create_app(settings)`` wires the parts together - secrets, the Redis pipe and queue, the
spool, the acceptor and its replay task - and returns a Starlette app whose lifespan starts and
stops them. Routes:

* ``POST <CALHOOKS_WEBHOOK_PATH>`` (``/webhooks/cal``) - ``calhooks.service.intake.endpoint``,
  for the environment's organization; ``POST <CALHOOKS_WEBHOOK_PATH>/<pcid>`` - the same
  endpoint for the connection ``pcid``, verified with that connection's secrets only (they
  and the list of connections come from ``service.subscriptions.startup``, kept in memory by
  ``service.intake.connection_secrets``). Both are dispatched before the middleware stack;
* ``GET /livez``, ``/readyz``, ``/metrics`` - ``calhooks.service.intake.health``; with
  ``CALHOOKS_PROBE_PORT`` set, on that port only (a request's port is its local address,
  ``scope["server"]``: the server listens on both, see ``listen_sockets``), and the probe port
  answers nothing else - so the ingress, which routes the public port, never reaches them;
* ``/cal-organizations`` - the MCP server (``service.mcp.http``, bearer ``CALHOOKS_MCP_TOKEN``);
* ``/console`` - the web console (``service.console``), when ``CALHOOKS_CONSOLE_USERS`` is set;
* anything passed as ``routes``, with the async context managers in ``lifespans`` entered
  for the app's lifetime.

No request ever gets a 500: an exception escaping any route is logged with its traceback and
answered 503 (with ``Retry-After``) by the outermost middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from calhooks.service.core.settings import Settings, get_settings
from calhooks.service.intake.acceptor import Acceptor
from calhooks.service.intake.connection_secrets import ConnectionSecrets
from calhooks.service.intake.endpoint import RETRY_AFTER_SECONDS, IntakeEndpoint
from calhooks.service.intake.health import PROBE_TIMEOUT, Health
from calhooks.service.intake.queue import EventQueue, Pacing
from calhooks.service.intake.readbudget import ReadBudget
from calhooks.service.intake.redischeck import EvictionCheck
from calhooks.service.intake.redispipe import RedisAddress, RedisPipe
from calhooks.service.intake.secrets import SecretProvider, SecretSource
from calhooks.service.intake.spool import Spool
from calhooks.service.mcp.http import create_mcp_app, mcp_routes
from calhooks.service.subscriptions.startup import intake_extension

log = structlog.get_logger("calhooks.web")

LifespanFactory = Callable[[], AbstractAsyncContextManager[object]]


@dataclass
class Intake:
    """The intake's parts, on ``app.state.intake`` (for probes, tests and mounted apps)."""

    settings: Settings
    pipe: RedisPipe
    queue: EventQueue
    spool: Spool
    secrets: SecretProvider
    acceptor: Acceptor
    endpoint: IntakeEndpoint
    eviction: EvictionCheck
    #: Each connection's secrets (``None``: connections unavailable - no encryption key).
    connections: ConnectionSecrets | None = None


def spool_directory(settings: Settings) -> Path:
    """``CALHOOKS_SPOOL_DIR``, or ``spool`` under the data directory."""
    return (settings.spool_dir or settings.data_dir / "spool").expanduser()


def build_intake(
    settings: Settings,
    *,
    redis_url: str | None = None,
    secret_sources: Sequence[SecretSource] = (),
    drain_interval: float = 1.0,
    connections: ConnectionSecrets | None = None,
) -> Intake:
    """The intake's parts for ``settings``, not started (``create_app``'s lifespan does that)."""
    pipe = RedisPipe(
        RedisAddress.from_settings(settings, url=redis_url),
        connect_timeout=max(settings.redis_deadline, 1.0),
    )
    queue = EventQueue(
        pipe,
        queue_name=settings.queue_name,
        dedupe_window=settings.dedupe_window,
        pacing=Pacing.from_settings(settings),
    )
    spool = Spool(spool_directory(settings), max_bytes=settings.spool_max_bytes)
    secrets = SecretProvider.from_settings(settings, extra=secret_sources)
    acceptor = Acceptor(
        queue, spool, deadline=settings.redis_deadline, drain_interval=drain_interval
    )
    endpoint = IntakeEndpoint(
        secrets=secrets,
        acceptor=acceptor,
        max_body_bytes=settings.max_body_bytes,
        allow_unsigned=settings.allow_unsigned,
        read_budget=ReadBudget(settings.effective_read_budget()),
        read_timeout=settings.body_read_timeout,
        path=settings.webhook_path,
        connections=connections,
    )
    eviction = EvictionCheck(pipe)
    return Intake(settings, pipe, queue, spool, secrets, acceptor, endpoint, eviction, connections)


def listen_sockets(host: str, port: int, probe_port: int | None) -> list[socket.socket]:
    """Bound sockets for the app: ``port``, and ``probe_port`` when set (for uvicorn's
    ``Server.run(sockets=...)``, so one server - one lifespan, one signal handler - serves both)."""
    ports = [port] if probe_port in (None, port) else [port, probe_port]
    sockets: list[socket.socket] = []
    for number in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, number))
        except OSError:
            sock.close()
            for bound in sockets:
                bound.close()
            raise
        sockets.append(sock)
    return sockets


class ErrorGuard:
    """Outermost middleware: an escaping exception becomes a logged 503, never a 500 page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("web.unhandled_error", path=scope.get("path"), method=scope.get("method"))
            if started:
                return  # too late to answer; the server closes the connection
            body = b'{"error":"unavailable","message":"unexpected error; retry later"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                        (b"retry-after", b"%d" % RETRY_AFTER_SECONDS),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


class WebApp(Starlette):
    """Starlette, with the webhook path dispatched before the middleware stack and router.

    The webhook path is ``hot_path`` itself (the environment's organization) and anything
    under ``hot_path/`` (a connection's URL, ``hot_path/<pcid>``): one string comparison
    or prefix test per request, whatever the number of connections.

    The intake is the hot path and handles every failure itself (it never raises), so it
    skips the layers the other routes need; its path is still a route of the app too.
    Requests to ``probe_port`` (when set) go to ``probe_app`` and nowhere else.
    """

    def __init__(
        self,
        *,
        hot_path: str,
        hot_app: ASGIApp,
        probe_port: int | None = None,
        probe_app: ASGIApp | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hot_path = hot_path
        # A webhook path of "/" has no room for connection URLs under it.
        self.hot_prefix = hot_path.rstrip("/") + "/" if hot_path.rstrip("/") else ""
        self.hot_app = hot_app
        self.probe_port = probe_port
        self.probe_app = probe_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.probe_app is not None and scope["type"] == "http":
            server = scope.get("server")
            if server is not None and server[1] == self.probe_port:
                # No scope["app"]: the bare router then answers 404/405 itself.
                await self.probe_app(scope, receive, send)
                return
        if scope["type"] == "http" and self._is_hot(scope):
            scope["app"] = self
            await self.hot_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _is_hot(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if path == self.hot_path or (self.hot_prefix and path.startswith(self.hot_prefix)):
            return True
        root: str = scope.get("root_path", "")
        if not root or not path.startswith(root):
            return False
        path = path[len(root) :]
        return path == self.hot_path or bool(self.hot_prefix and path.startswith(self.hot_prefix))


def connection_route(webhook_path: str, endpoint: ASGIApp) -> list[BaseRoute]:
    """``<webhook path>/<pcid>`` as a route too (requests normally take the fast path)."""
    base = webhook_path.rstrip("/")
    return [Route(base + "/{pcid:path}", endpoint, name="intake_connection")] if base else []


def probe_routes(intake: Intake) -> list[BaseRoute]:
    """``/livez``, ``/readyz`` and ``/metrics`` over the intake's parts."""
    settings = intake.settings
    health = Health(
        queue=intake.queue,
        secrets=intake.secrets,
        acceptor=intake.acceptor,
        eviction=intake.eviction,
        connections=intake.connections,
        max_body_bytes=settings.max_body_bytes,
        allow_unsigned=settings.allow_unsigned,
    )
    return [
        Route("/livez", health.livez, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
    ]


@contextlib.asynccontextmanager
async def running(intake: Intake, *, probe_port: int) -> AsyncIterator[None]:
    """The intake's lifetime: spool opened, secrets loaded, the secret refresh and the
    acceptor's replay running; on exit they stop and the spool and Redis pipe close."""
    settings = intake.settings
    intake.spool.open()
    await intake.secrets.refresh()
    if intake.connections is not None:
        await intake.connections.refresh()
    with_connections = intake.connections is not None and intake.connections.with_secret() > 0
    if (
        intake.secrets.ready
        and not intake.secrets.keys()
        and not settings.allow_unsigned
        and not with_connections
    ):
        log.error(
            "intake.no_valid_secret",
            hint="no valid webhook signing secret: every delivery would get 401; "
            "/readyz stays 503 until one is configured",
        )
    await intake.eviction.check(PROBE_TIMEOUT)
    background = [
        asyncio.create_task(intake.secrets.run(settings.webhook_secrets_refresh)),
        asyncio.create_task(intake.acceptor.run()),
    ]
    if intake.connections is not None:
        background.append(
            asyncio.create_task(intake.connections.run(settings.webhook_secrets_refresh))
        )
    log.info(
        "intake.started",
        path=settings.webhook_path,
        redis=intake.pipe.address.describe(),
        spool=str(intake.spool.directory),
        probe_port=probe_port,
        read_budget_bytes=intake.endpoint.budget.total,
        connections=intake.connections.count if intake.connections is not None else None,
    )
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await intake.spool.aclose()
        await intake.pipe.aclose()
        log.info("intake.stopped")


def create_app(
    settings: Settings | None = None,
    *,
    redis_url: str | None = None,
    secret_sources: Sequence[SecretSource] = (),
    routes: Sequence[BaseRoute] = (),
    lifespans: Sequence[LifespanFactory] = (),
    drain_interval: float = 1.0,
) -> Starlette:
    """The web app; ``routes``/``lifespans`` mount more apps (see the module docstring)."""
    settings = settings or get_settings()
    # Webhook secrets kept in Redis by `calhooks webhooks`, and CALHOOKS_WEBHOOKS_AUTO_APPLY.
    subscriptions = intake_extension(settings, redis_url=redis_url)
    intake = build_intake(
        settings,
        redis_url=redis_url,
        secret_sources=[*secret_sources, *subscriptions.sources],
        drain_interval=drain_interval,
        connections=subscriptions.connections,
    )
    probes = probe_routes(intake)
    separate_probes = settings.probe_port is not None and settings.probe_port != settings.port
    mcp = create_mcp_app(settings)
    # The web console at /console (service/console/), when CALHOOKS_CONSOLE_USERS is set;
    # imported only then: it brings the Cal.com client, arq and the templates (~25 MB).
    if settings.console_users is not None:
        from calhooks.service.console import create_console

        console = create_console(settings, spool=intake.spool, redis_url=redis_url)
        if console is not None:
            routes = [*routes, Mount("/console", app=console.app)]
            lifespans = [*lifespans, console.lifespan]
    mounted = (*lifespans, subscriptions.lifespan, mcp.lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        probe_port = settings.probe_port if separate_probes else settings.port
        async with running(intake, probe_port=probe_port or settings.port):
            try:
                async with contextlib.AsyncExitStack() as stack:
                    for factory in mounted:
                        await stack.enter_async_context(factory())
                    # What exists now (modules, settings, the apps) lives as long as the
                    # process: out of the collector's sight, full collections stay short
                    # instead of showing up as latency spikes of tens of milliseconds.
                    gc.freeze()
                    yield
            finally:
                gc.unfreeze()

    app = WebApp(
        hot_path=settings.webhook_path,
        hot_app=intake.endpoint,
        probe_port=settings.probe_port if separate_probes else None,
        probe_app=ErrorGuard(Router(routes=probes)) if separate_probes else None,
        routes=[
            Route(settings.webhook_path, intake.endpoint, name="intake"),
            *connection_route(settings.webhook_path, intake.endpoint),
            *([] if separate_probes else probes),
            *routes,  # before the MCP routes: a caller's own route wins
            *mcp_routes(mcp),
        ],
        middleware=[Middleware(ErrorGuard)],
        lifespan=lifespan,
    )
    app.state.intake = intake
    return app
