"""``calhooks serve``: the web process - webhook intake, probes, metrics - under uvicorn.

uvicorn runs with uvloop and httptools when installed, trusts ``X-Forwarded-*`` only from
``CALHOOKS_FORWARDED_ALLOW_IPS``, keeps idle connections longer than common load balancers
do (so they never reuse one uvicorn is closing), caps concurrent connections, and on SIGTERM
stops accepting, lets in-flight requests finish (``CALHOOKS_SHUTDOWN_TIMEOUT``) and then
stops the intake (pending spool writes are flushed). Its access log is off: the intake logs
each delivery itself, with more to say. With ``CALHOOKS_PROBE_PORT`` set, the same server also
listens there, and ``/livez``, ``/readyz``, ``/metrics`` answer on that port only.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import uvicorn

    from calhooks.service.core.settings import Settings

#: Longer than the idle timeout of common load balancers (AWS ALB: 60 s).
KEEP_ALIVE_SECONDS = 75
#: Connections served at once; past it uvicorn answers 503 rather than queueing without end.
MAX_CONCURRENCY = 2048


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``calhooks serve`` (also used by ``bench/ingest.py``)."""
    return {
        "lifespan": "on",
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "server_header": False,
        "access_log": False,
        "log_config": None,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout),
        "limit_concurrency": MAX_CONCURRENCY,
        "backlog": 2048,
    }


def uvicorn_config(settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration of ``calhooks serve`` (the app is built here)."""
    import uvicorn

    from calhooks.service.app import create_app

    return uvicorn.Config(create_app(settings), host=host, port=port, **server_options(settings))


def run(host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT (``python -m calhooks.service`` with no arguments calls this)."""
    import uvicorn

    from calhooks.service.app import listen_sockets
    from calhooks.service.core.logs import configure_from_settings
    from calhooks.service.core.settings import get_settings

    configure_from_settings()
    settings = get_settings()
    host = host if host is not None else settings.host
    port = port if port is not None else settings.port
    config = uvicorn_config(settings, host=host, port=port)
    try:
        sockets = listen_sockets(host, port, settings.probe_port)
    except OSError as error:
        reason = error.strerror or error
        raise SystemExit(f"calhooks serve: cannot listen on {host}: {reason}") from None
    # uvicorn re-raises the signal it stopped on once it has shut down; with the default
    # handler that makes a clean SIGTERM stop look like a crash (exit -15) to whoever waits.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.Server(config).run(sockets=sockets)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: CALHOOKS_HOST]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [default: CALHOOKS_PORT]")
    ] = None,
) -> None:
    """Run the web process: the webhook intake, /livez, /readyz, /metrics.

    The probes and metrics answer on CALHOOKS_PROBE_PORT only, when it is set.
    """
    from calhooks.service.cli.ports import require_free
    from calhooks.service.core.settings import get_settings

    settings = get_settings()
    ports = {"intake": port if port is not None else settings.port}
    if settings.probe_port is not None and settings.probe_port != ports["intake"]:
        ports["intake probe"] = settings.probe_port
    require_free(
        host if host is not None else settings.host,
        ports,
        "another `calhooks serve`? choose another with --port",
    )
    run(host, port)
