"""``calhooks dev``: the whole loop on one machine, in one command.

Starts, in one process: the embedded Redis (unless ``CALHOOKS_REDIS_URL`` names one), the
sandbox Cal.com, the intake and a worker running the rules (``examples/rules.yaml`` unless
``CALHOOKS_RULES_FILE`` or ``--rules`` says otherwise). It registers a sandbox webhook for
the rules' triggers that posts, signed, to the intake, prints what to try, and on Ctrl-C
stops the worker (letting running events finish), the servers, and the Redis it started.

The sandbox and the intake run under uvicorn in threads of their own; the worker runs on the
main thread's event loop, which handles the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from starlette.types import ASGIApp

from calhooks.service.cli.output import fail
from calhooks.service.core.settings import Settings, get_settings

app = typer.Typer(help="Run the sandbox, intake and a worker together, for trying calhooks.")

EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "examples" / "rules.yaml"
DRAIN_SECONDS = 10
DEFAULT_SANDBOX_PORT = 8788


class ServerThread:
    """An ASGI app under uvicorn in a background thread (no signal handlers of its own);
    ``probe_port`` is a second port the same server listens on (``CALHOOKS_PROBE_PORT``)."""

    def __init__(
        self, app: ASGIApp, host: str, port: int, name: str, probe_port: int | None = None
    ) -> None:
        from calhooks.service.app import listen_sockets

        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="on", access_log=False
        )
        self.server = uvicorn.Server(config)
        sockets = listen_sockets(host, port, probe_port)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": sockets}, name=name, daemon=True
        )
        self.url = f"http://{host}:{port}"

    def start(self, timeout: float = 15.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.thread.name} did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _check_ports(host: str, ports: dict[str, int]) -> None:
    taken = [f"{name} port {port}" for name, port in ports.items() if not _port_free(host, port)]
    if taken:
        fail(f"{', '.join(taken)} already in use (another `calhooks dev`?); choose other ports")


@dataclass
class Plan:
    host: str
    sandbox_port: int
    port: int
    worker_port: int
    rules: Path | None
    probe_port: int | None = None


def _environment(plan: Plan, secret: str) -> dict[str, str]:
    from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID

    env = {
        "CALHOOKS_API_URL": f"http://{plan.host}:{plan.sandbox_port}",
        "CALHOOKS_API_KEY": SANDBOX_API_KEY,
        "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
        "CALHOOKS_WEBHOOK_SECRETS": secret,
        "CALHOOKS_HOST": plan.host,
        "CALHOOKS_PORT": str(plan.port),
        **({"CALHOOKS_PROBE_PORT": str(plan.probe_port)} if plan.probe_port else {}),
        "CALHOOKS_WORKER_HTTP_HOST": plan.host,
        "CALHOOKS_WORKER_HTTP_PORT": str(plan.worker_port),
        "CALHOOKS_WORKER_NAME": "dev-worker",
        "CALHOOKS_WORKER_JOB_COMPLETION_WAIT": str(DRAIN_SECONDS),
    }
    if plan.rules is not None:
        env["CALHOOKS_RULES_FILE"] = str(plan.rules)
    return env


async def _register_webhook(settings: Settings, intake_url: str, secret: str) -> list[str]:
    from calhooks.service.calcom import CalcomClient
    from calhooks.service.calcom.overlay import WEBHOOK_TRIGGERS
    from calhooks.workers.rulesource import RulesSource

    triggers = sorted(RulesSource.from_settings(settings).triggers()) or sorted(WEBHOOK_TRIGGERS)
    async with CalcomClient.from_settings(settings) as cal:
        await cal.call(
            "cal_organizations_webhooks_controller_create_organization_webhook",
            active=True,
            subscriberUrl=intake_url + settings.webhook_path,
            triggers=triggers,
            secret=secret,
        )
    return triggers


def _banner(plan: Plan, settings: Settings, redis: str, triggers: list[str]) -> str:
    sandbox = f"http://{plan.host}:{plan.sandbox_port}"
    exports = {
        "CALHOOKS_API_URL": sandbox,
        "CALHOOKS_API_KEY": settings.api_key.get_secret_value() if settings.api_key else "",
        "CALHOOKS_ORG_ID": str(settings.org_id),
    }
    if os.environ.get("CALHOOKS_REDIS_URL"):
        exports["CALHOOKS_REDIS_URL"] = redis
    elif os.environ.get("CALHOOKS_DATA_DIR"):
        exports["CALHOOKS_DATA_DIR"] = str(settings.data_dir)
    export = "export " + " ".join(f"{name}={value}" for name, value in exports.items())
    url = "" if plan.sandbox_port == DEFAULT_SANDBOX_PORT else f" --url {sandbox}"
    return f"""
calhooks dev is running
  sandbox Cal.com  {sandbox}   (its state: {sandbox}/_sandbox/state)
  intake           http://{plan.host}:{plan.port}{settings.webhook_path}
  intake probes    http://{plan.host}:{plan.probe_port or plan.port}/readyz (and /livez, /metrics)
  worker           http://{plan.host}:{plan.worker_port}/metrics
  redis            {redis}
  rules            {settings_rules(settings)}
  webhook          the sandbox delivers {", ".join(triggers)} to the intake, signed

Try it from another terminal:
  {export}
  calhooks sandbox emit BOOKING_CREATED --user alice --event-type time-off{url}
      the intake answers the delivery with the event's id, {{"id": "..."}}; the booking's
      uid is under body.payload.uid
  calhooks tools call cal_organizations_users_ooocontroller_get_organization_user_ooo -p userId=101
      alice's out-of-office entry, made by the time-off rule
  calhooks events show ID
      what happened to the event: the rules it matched, each step and Cal.com call
  calhooks sandbox emit BOOKING_CANCELLED --user alice --event-type time-off{url} --set 'uid="UID"'
      the cancellation deletes the entry again
  calhooks dlq list
      rules that failed for good (none, hopefully)
Edit the rules file and the worker uses it from the next event. Ctrl-C stops everything.
"""


def settings_rules(settings: Settings) -> str:
    value = getattr(settings, "rules_file", None)
    return str(value) if value else "(none)"


async def _run_worker(stop: asyncio.Event) -> None:
    from calhooks.workers.bootstrap import worker_options
    from calhooks.workers.wakeup import WakeableWorker

    options = worker_options(get_settings(), handle_signals=False)
    options["ctx"]["logging_configured"] = True
    worker = WakeableWorker(**options)
    main = asyncio.create_task(worker.main())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if main.done():
        stopping.cancel()
        await worker.close()
        main.result()  # the worker died: raise why
        return
    typer.echo("Stopping: letting running events finish...", err=True)
    worker.allow_pick_jobs = False
    running = [task for task in worker.tasks.values() if not task.done()]
    if running:
        await asyncio.wait(running, timeout=DRAIN_SECONDS)
    main.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await main
    await worker.close()


async def _serve(plan: Plan, secret: str, redis: str) -> None:
    from calhooks.service.app import create_app as create_intake
    from calhooks.service.sandbox import create_app as create_sandbox

    settings = get_settings()
    sandbox = ServerThread(create_sandbox(), plan.host, plan.sandbox_port, "sandbox")
    intake = ServerThread(
        create_intake(settings), plan.host, plan.port, "intake", probe_port=settings.probe_port
    )
    sandbox.start()
    intake.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        worker = asyncio.create_task(_run_worker(stop))
        triggers = await _register_webhook(settings, intake.url, secret)
        if await _worker_ready(plan, worker):
            typer.echo(_banner(plan, settings, redis, triggers), err=True)
        await worker
    finally:
        intake.stop()
        sandbox.stop()


async def _worker_ready(plan: Plan, worker: asyncio.Task[None], within: float = 30.0) -> bool:
    """Wait for the worker's /readyz; ``False`` if the worker stopped first."""
    import httpx

    url = f"http://{plan.host}:{plan.worker_port}/readyz"
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while not worker.done() and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    return True
            await asyncio.sleep(0.05)
    return False


def _stop_redis(url: str) -> None:
    import redis as sync_redis

    with contextlib.suppress(Exception):
        sync_redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2).shutdown()


@app.callback(invoke_without_command=True)
def dev(
    host: Annotated[str, typer.Option(help="Interface for every server.")] = "127.0.0.1",
    sandbox_port: Annotated[int, typer.Option(help="Sandbox Cal.com port.")] = DEFAULT_SANDBOX_PORT,
    port: Annotated[int, typer.Option(help="Intake port.")] = 8080,
    worker_port: Annotated[int, typer.Option(help="Worker probe/metrics port.")] = 9091,
    probe_port: Annotated[
        int | None,
        typer.Option(help="Intake probe/metrics port [default: CALHOOKS_PROBE_PORT, else --port]."),
    ] = None,
    rules: Annotated[
        Path | None, typer.Option(help="Rules file (default: CALHOOKS_RULES_FILE or examples).")
    ] = None,
) -> None:
    """Run the sandbox, intake and a worker on embedded Redis, with example rules."""
    from calhooks.service.core.logs import configure_logging
    from calhooks.service.core.redisconn import SOCKET_NAME, redis_url

    if probe_port is None and os.environ.get("CALHOOKS_PROBE_PORT"):
        probe_port = get_settings().probe_port
    ports = {"sandbox": sandbox_port, "intake": port, "worker": worker_port}
    if probe_port is not None and probe_port != port:
        ports["intake probe"] = probe_port
    _check_ports(host, ports)
    rules_file = rules or (None if os.environ.get("CALHOOKS_RULES_FILE") else EXAMPLE_RULES)
    if rules_file is not None and not rules_file.exists():
        fail(f"rules file {rules_file} not found")
    plan = Plan(host, sandbox_port, port, worker_port, rules_file, probe_port)
    secret = "whsec_dev_" + secrets.token_hex(12)
    os.environ.update(_environment(plan, secret))
    get_settings.cache_clear()
    settings = get_settings()
    log_format = "console" if settings.log_format == "auto" else settings.log_format
    configure_logging(settings.log_level, log_format)
    embedded_socket = settings.data_dir / "redis" / SOCKET_NAME
    started_redis = not settings.redis_url and not _answers(embedded_socket)
    url = redis_url(settings)
    try:
        asyncio.run(_serve(plan, secret, url))
    finally:
        if started_redis:
            _stop_redis(url)
    typer.echo("calhooks dev stopped.", err=True)


def _answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
