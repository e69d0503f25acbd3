"""Run ASGI apps on real loopback ports for tests (uvicorn in a background thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from calhooks.service.core.embedded_redis import free_port


@contextmanager
def serve_app(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    probe_port: int | None = None,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port for the duration; yields the base URL.

    ``probe_port``: a second port the same server listens on (``CALHOOKS_PROBE_PORT``).
    """
    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    sockets = None
    if probe_port is not None:
        from calhooks.service.app import listen_sockets

        sockets = listen_sockets(host, port, probe_port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
