"""``create_app``: the sandbox as a Starlette app (``calhooks sandbox``, tests, ``calhooks dev``).

``app.state.sandbox`` is the ``Sandbox`` behind it (store, request log, deliveries, faults,
rate limiter) for code running next to the server, such as tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from calhooks.service.sandbox.admin import Admin
from calhooks.service.sandbox.api import RAW_SEND, Api
from calhooks.service.sandbox.faults import FaultRule
from calhooks.service.sandbox.ratelimit import RateLimit
from calhooks.service.sandbox.sandbox import CALCOM_RATE_LIMIT, Sandbox


class SandboxApp(Starlette):
    """A Starlette app that keeps the server's ``send`` in the scope, to drop connections."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(
    *,
    seeded: bool = True,
    organizations: int = 0,
    rate_limit: RateLimit | None = CALCOM_RATE_LIMIT,
    faults: Iterable[FaultRule] = (),
    keep_requests: int = 10_000,
    delivery_timeout: float = 10.0,
    allow_remote_deliveries: bool = False,
) -> Starlette:
    """A fresh sandbox: seeded (``seeded=False``: organizations and keys only), with
    ``organizations`` numbered organizations besides the seeded ones (``seed``), throttled
    like Cal.com unless ``rate_limit`` is ``None``, with ``faults`` active from the start;
    deliveries go to loopback addresses only unless ``allow_remote_deliveries``."""
    sandbox = Sandbox(
        seeded=seeded,
        organizations=organizations,
        rate_limit=rate_limit or RateLimit(enabled=False),
        faults=faults,
        keep_requests=keep_requests,
        delivery_timeout=delivery_timeout,
        allow_remote_deliveries=allow_remote_deliveries,
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await sandbox.deliverer.aclose()

    app = SandboxApp(
        routes=[Mount("/_sandbox", routes=Admin(sandbox).routes()), *Api(sandbox).routes()],
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
