"""``calhooks dev``: the whole loop on one machine, in one command.

Starts, in one process: the embedded Redis (unless ``CALHOOKS_REDIS_URL`` names one), the
sandbox Cal.com, the intake and a worker running the rules (the example rules shipped in the
package unless ``CALHOOKS_RULES_FILE`` or ``--rules`` says otherwise). It applies the webhook
plan as ``calhooks webhooks apply`` does (same secret store, so both work together), prints
what to try - commands that work as printed from any terminal - and on Ctrl-C stops the worker
(letting running events finish), the servers, and the Redis it started.

``--orgs N`` runs N sandbox organizations: the environment's stays Acme (``CALHOOKS_API_KEY``,
so every command the banner prints works as without it), and each other one - Globex, Acme
Labs, then numbered organizations (``Org 1001``, ...) the sandbox adds - is a connection
(``calhooks connections``), named by its slug, stored with its own sandbox key and org id. The
webhook plan is applied for the environment's organization and for every connection, each in
its own organization with its own key and secret, delivering to its own intake URL
(``<webhook path>/<pcid>``), so the worker runs each organization's events with its key.

Dev data (the embedded Redis, the spool, the dev encryption key) lives in one place,
``$CALHOOKS_DATA_DIR/dev`` (``~/.local/share/calhooks/dev``); its Redis data is wiped at each
start, as the sandbox's state is.

The sandbox and the intake run under uvicorn in threads of their own; the worker runs on the
main thread's event loop, which handles the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from calhooks.service.cli.output import fail
from calhooks.service.cli.ports import require_free

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from calhooks.service.core.settings import Settings

#: The example rules, shipped in the package (examples/rules.yaml in a checkout links here).
EXAMPLE_RULES = (
    Path(__file__).resolve().parents[2] / "workers" / "rules" / "examples" / "rules.yaml"
)
#: Where ``calhooks dev`` keeps its data, below CALHOOKS_DATA_DIR.
DEV_SUBDIR = "dev"
#: Organizations the seeded sandbox has (Acme, Globex, Acme Labs); more are numbered ones.
SEEDED_ORGS = 3
#: Organizations whose webhooks ``calhooks dev`` applies at once.
APPLY_CONCURRENCY = 8
#: Most organizations ``--orgs`` runs.
MAX_ORGS = 1000
#: The file that marks a data directory as the dev loop's own (so it may be wiped).
DEV_MARKER = "calhooks-dev"
DRAIN_SECONDS = 10
DEFAULT_SANDBOX_PORT = 8788


class ServerThread:
    """An ASGI app under uvicorn in a background thread (no signal handlers of its own);
    ``probe_port`` is a second port the same server listens on (``CALHOOKS_PROBE_PORT``)."""

    def __init__(
        self, app: ASGIApp, host: str, port: int, name: str, probe_port: int | None = None
    ) -> None:
        import uvicorn

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


@dataclass
class Plan:
    host: str
    sandbox_port: int
    port: int
    worker_port: int
    rules: Path | None
    #: Serve beyond loopback and let the sandbox deliver to any host (``--allow-remote``).
    allow_remote: bool = False
    probe_port: int | None = None
    #: Sandbox organizations: the environment's (Acme) and ``orgs - 1`` connections.
    orgs: int = 1


@dataclass(frozen=True)
class DevConnection:
    """A sandbox organization ``calhooks dev`` stored as a connection."""

    name: str
    pcid: str
    org_id: int


def _environment(plan: Plan, data_dir: Path, encryption_key: str) -> dict[str, str]:
    from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID

    env = {
        "CALHOOKS_API_URL": f"http://{plan.host}:{plan.sandbox_port}",
        "CALHOOKS_API_KEY": SANDBOX_API_KEY,
        "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
        "CALHOOKS_DATA_DIR": str(data_dir),
        "CALHOOKS_ENCRYPTION_KEY": encryption_key,
        "CALHOOKS_PUBLIC_URL": f"http://{plan.host}:{plan.port}",
        "CALHOOKS_HOST": plan.host,
        "CALHOOKS_PORT": str(plan.port),
        **({"CALHOOKS_PROBE_PORT": str(plan.probe_port)} if plan.probe_port else {}),
        "CALHOOKS_WORKER_HTTP_HOST": plan.host,
        "CALHOOKS_WORKER_HTTP_PORT": str(plan.worker_port),
        "CALHOOKS_WORKER_NAME": "dev-worker",
        "CALHOOKS_WORKER_JOB_COMPLETION_WAIT": str(DRAIN_SECONDS),
        # An apply waits for the intake to load the new secret: one second, not five.
        "CALHOOKS_WEBHOOK_SECRETS_REFRESH": os.environ.get("CALHOOKS_WEBHOOK_SECRETS_REFRESH", "1"),
    }
    if plan.rules is not None:
        env["CALHOOKS_RULES_FILE"] = str(plan.rules)
    return env


def sandbox_organizations(orgs: int, numbered: list[int]) -> list[tuple[str, int, str]]:
    """The connections ``--orgs`` makes besides the environment's Acme: (name, org id, API
    key) for Globex, Acme Labs, then the ``numbered`` organizations, ``orgs - 1`` in all."""
    from calhooks.service.sandbox import (
        MANAGED_API_KEY,
        MANAGED_ORG_ID,
        SECOND_API_KEY,
        SECOND_ORG_ID,
        organization_api_key,
    )

    seeded = [
        ("globex", SECOND_ORG_ID, SECOND_API_KEY),
        ("acme-labs", MANAGED_ORG_ID, MANAGED_API_KEY),
    ]
    more = [(f"org-{org_id}", org_id, organization_api_key(org_id)) for org_id in numbered]
    return (seeded + more)[: max(0, orgs - 1)]


async def _store_connections(
    settings: Settings, organizations: list[tuple[str, int, str]]
) -> list[DevConnection]:
    """Store each organization as a connection to the sandbox (a same-named one already
    pointing at it is kept; one pointing elsewhere, from an earlier loop, is replaced)."""
    from calhooks.service.calcom.client import Credentials
    from calhooks.service.connections.store import ConnectionStore
    from calhooks.service.core.redisconn import create_redis

    base_url = settings.api_url
    redis = create_redis(settings)
    try:
        store = ConnectionStore.from_settings(settings, redis)
        stored = []
        for name, org_id, key in organizations:
            found = await store.find(name)
            if found is not None and (
                found.info.org_id != org_id
                or found.info.base_url != base_url
                or found.credentials.api_key != key
            ):
                await store.remove(found.info.pcid)
                found = None
            if found is None:
                info = await store.add(
                    name, Credentials(api_key=key), org_id=org_id, base_url=base_url
                )
            else:
                info = found.info
            stored.append(DevConnection(name, info.pcid, org_id))
    finally:
        await redis.aclose()
    return stored


async def _register_webhook(settings: Settings, *, connections: bool = False) -> list[str]:
    """Apply the webhook plan as ``calhooks webhooks apply`` does - for the environment's
    organization and, with ``connections``, every connection's (``--all-connections``): the
    secrets go to the stores the intake reads, so the commands agree on webhooks and secrets."""
    from calhooks.service.calcom import CalcomClient
    from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.subscriptions.apply import apply_webhooks
    from calhooks.service.subscriptions.desired import DesiredFactory
    from calhooks.service.subscriptions.errors import DesiredStateError
    from calhooks.service.subscriptions.rule_triggers import load_rule_triggers
    from calhooks.service.subscriptions.targets import ENVIRONMENT, Target, connection_targets

    try:
        triggers = load_rule_triggers(settings)
    except DesiredStateError as exc:
        fail(str(exc))
    if not triggers and not settings.webhook_extra_triggers:
        # Rules with no trigger of their own: deliver everything, to see what arrives.
        update = {"webhook_extra_triggers": ",".join(WEBHOOK_TRIGGERS)}
        settings = settings.model_copy(update=update)
    redis = create_redis(settings)
    try:
        targets = [ENVIRONMENT]
        if connections:
            targets += await connection_targets(settings, redis, everything=True)
        try:
            desired = [target.desired(settings, triggers) for target in targets]
        except DesiredStateError as exc:
            fail(str(exc))
        gate = asyncio.Semaphore(APPLY_CONCURRENCY)  # each waits for the intake to load its secret
        async with CalcomClient.from_settings(settings) as cal:

            async def apply(target: Target, desired_for: DesiredFactory) -> list[str]:
                async with gate:
                    result = await apply_webhooks(
                        target.client(cal),
                        target.store(settings, redis),
                        desired_for,
                        refresh_interval=settings.webhook_secrets_refresh,
                        org_id=target.org_id,
                    )
                return list(result.plan.desired.triggers)

            applied = await asyncio.gather(*map(apply, targets, desired))
    finally:
        await redis.aclose()
    return applied[0]


#: Directories on every shell's PATH: a calhooks installed there needs no PATH entry.
SYSTEM_BIN = ("/usr/bin", "/bin", "/usr/local/bin")


def command_prefix() -> str:
    """The directory another terminal must put on PATH to run this very ``calhooks`` (a
    virtualenv's bin, activated here or not, is not on a fresh terminal's PATH), or ``""``."""
    bindir = Path(os.path.abspath(sys.executable)).parent
    if not (bindir / "calhooks").exists() or str(bindir) in SYSTEM_BIN:
        return ""
    return str(bindir)


def export_line(plan: Plan, settings: Settings, redis: str) -> str:
    """One ``export`` line that points any shell at this dev loop (and puts calhooks on PATH)."""
    exports: dict[str, str] = {}
    bindir = command_prefix()
    if bindir:
        exports["PATH"] = f"{shlex.quote(bindir)}:$PATH"
    values = {
        "CALHOOKS_API_URL": f"http://{plan.host}:{plan.sandbox_port}",
        "CALHOOKS_API_KEY": settings.api_key.get_secret_value() if settings.api_key else "",
        "CALHOOKS_ORG_ID": str(settings.org_id),
        "CALHOOKS_DATA_DIR": str(settings.data_dir),
        "CALHOOKS_ENCRYPTION_KEY": (
            settings.encryption_key.get_secret_value() if settings.encryption_key else ""
        ),
        "CALHOOKS_PUBLIC_URL": settings.public_url or "",
        "CALHOOKS_RULES_FILE": str(settings.rules_file or ""),
    }
    if os.environ.get("CALHOOKS_REDIS_URL"):
        values["CALHOOKS_REDIS_URL"] = redis
    exports.update({name: shlex.quote(value) for name, value in values.items() if value})
    return "export " + " ".join(f"{name}={value}" for name, value in exports.items())


def _connections_lines(plan: Plan, settings: Settings, connections: Sequence[DevConnection]) -> str:
    """The banner's lines about the connections (none without ``--orgs``)."""
    if not connections:
        return ""
    intake = f"http://{plan.host}:{plan.port}{settings.webhook_path}"
    lines = [f"  connections      {len(connections)}, each its own organization, key and webhook:"]
    lines += [f"    {c.name:<14} org {c.org_id:<5} {intake}/{c.pcid}" for c in connections[:10]]
    if len(connections) > 10:
        lines.append(f"    ... and {len(connections) - 10} more (calhooks connections list)")
    return "\n".join(lines) + "\n"


def _connection_try_lines(connections: Sequence[DevConnection], url: str) -> str:
    """With ``--orgs``: a booking in Globex, whose rules run with Globex's key."""
    from calhooks.service.sandbox import SECOND_ORG_ID

    if not any(c.org_id == SECOND_ORG_ID for c in connections):
        return ""
    return (
        f"  calhooks sandbox emit BOOKING_CREATED --user dave --org-id {SECOND_ORG_ID}"
        f" --event-type time-off{url}\n"
        "      Globex's booking, delivered to its connection's URL: the worker calls Cal.com"
        " with Globex's key\n"
    )


def _banner(
    plan: Plan,
    settings: Settings,
    redis: str,
    triggers: list[str],
    connections: Sequence[DevConnection] = (),
) -> str:
    sandbox = f"http://{plan.host}:{plan.sandbox_port}"
    url = "" if plan.sandbox_port == DEFAULT_SANDBOX_PORT else f" --url {sandbox}"
    return f"""
calhooks dev is running
  sandbox Cal.com  {sandbox}   (its state: {sandbox}/_sandbox/state)
  intake           http://{plan.host}:{plan.port}{settings.webhook_path}
  intake probes    http://{plan.host}:{plan.probe_port or plan.port}/readyz (and /livez, /metrics)
  worker           http://{plan.host}:{plan.worker_port}/metrics
  redis            {redis}
  dev data         {settings.data_dir}   (wiped at each start, like the sandbox)
  rules            {settings_rules(settings)}
  webhook          the sandbox delivers {", ".join(triggers)} to the intake, signed
{_connections_lines(plan, settings, connections)}
Try it from another terminal (the first line points it at this loop):
  {export_line(plan, settings, redis)}
  calhooks sandbox emit BOOKING_CREATED --user alice --event-type time-off{url}
      prints the delivery: the intake's event id and the booking's uid
  calhooks tools call cal_organizations_users_ooocontroller_get_organization_user_ooo -p userId=101
      alice's out-of-office entry, made by the time-off rule
  calhooks events show EVENT_ID
      what happened to the event: the rules it matched, each step and Cal.com call
  calhooks sandbox emit BOOKING_CANCELLED --user alice --event-type time-off --set uid=UID{url}
      the cancellation deletes the entry again
{_connection_try_lines(connections, url)}  calhooks dlq list
      rules that failed for good (none, hopefully)
  calhooks webhooks plan
      the webhook this loop applied, as `calhooks webhooks` sees it
Edit the rules file and the worker uses it from the next event. Ctrl-C stops everything.
"""


def settings_rules(settings: Settings) -> str:
    value = getattr(settings, "rules_file", None)
    return str(value) if value else "(none)"


async def _run_worker(stop: asyncio.Event) -> None:
    from calhooks.service.core.settings import get_settings
    from calhooks.workers.bootstrap import wakeable_options
    from calhooks.workers.wakeup import WakeableWorker

    options = wakeable_options(get_settings(), handle_signals=False)
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


async def _serve(plan: Plan, redis: str) -> None:
    from calhooks.service.app import create_app as create_intake
    from calhooks.service.core.settings import get_settings
    from calhooks.service.sandbox import create_app as create_sandbox

    settings = get_settings()
    sandbox_app = create_sandbox(
        allow_remote_deliveries=plan.allow_remote,
        organizations=max(0, plan.orgs - SEEDED_ORGS),
    )
    sandbox = ServerThread(sandbox_app, plan.host, plan.sandbox_port, "sandbox")
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
        numbered = sorted(o for o in sandbox_app.state.sandbox.store.orgs if o > SEEDED_ORGS)
        organizations = sandbox_organizations(plan.orgs, numbered)
        connections = await _store_connections(settings, organizations)
        triggers = await _register_webhook(settings, connections=bool(connections))
        if await _worker_ready(plan, worker):
            typer.echo(_banner(plan, settings, redis, triggers, connections), err=True)
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
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote", help="Allow a non-loopback --host (the sandbox needs no key)."
        ),
    ] = False,
    orgs: Annotated[
        int,
        typer.Option(
            "--orgs",
            min=1,
            max=MAX_ORGS,
            help="Sandbox organizations: Acme (the environment's), then Globex, Acme Labs and"
            " numbered ones, each a connection with its own key and webhook.",
        ),
    ] = 1,
) -> None:
    """Run the sandbox, intake and a worker together, for trying calhooks.

    On an embedded Redis, with the example rules unless --rules or CALHOOKS_RULES_FILE.
    """
    from calhooks.service.core.logs import configure_logging
    from calhooks.service.core.redisconn import redis_url
    from calhooks.service.core.settings import get_settings
    from calhooks.service.sandbox.exposure import bind_refusal, bind_warning, is_loopback_host

    if not is_loopback_host(host):
        if not allow_remote:
            fail(bind_refusal(host))
        typer.echo(bind_warning(host, sandbox_port), err=True)
    if probe_port is None and os.environ.get("CALHOOKS_PROBE_PORT"):
        probe_port = get_settings().probe_port
    ports = {"sandbox": sandbox_port, "intake": port, "worker": worker_port}
    if probe_port is not None and probe_port != port:
        ports["intake probe"] = probe_port
    require_free(host, ports, "another `calhooks dev`? choose other ports")
    rules_file = rules or (None if os.environ.get("CALHOOKS_RULES_FILE") else EXAMPLE_RULES)
    if rules_file is not None and not rules_file.exists():
        fail(f"rules file {rules_file} not found")
    plan = Plan(host, sandbox_port, port, worker_port, rules_file, allow_remote, probe_port, orgs)
    data_dir = dev_data_dir()
    if not os.environ.get("CALHOOKS_REDIS_URL"):
        _wipe_redis(data_dir)
    os.environ.update(_environment(plan, data_dir, _encryption_key(data_dir)))
    get_settings.cache_clear()
    settings = get_settings()
    log_format = "console" if settings.log_format == "auto" else settings.log_format
    configure_logging(settings.log_level, log_format)
    started_redis = not settings.redis_url
    url = redis_url(settings)
    try:
        asyncio.run(_serve(plan, url))
    finally:
        if started_redis:
            _stop_redis(url)
    typer.echo("calhooks dev stopped.", err=True)


def dev_data_dir() -> Path:
    """``CALHOOKS_DATA_DIR`` when set, else ``~/.local/share/calhooks/dev``."""
    if os.environ.get("CALHOOKS_DATA_DIR"):
        return Path(os.environ["CALHOOKS_DATA_DIR"]).expanduser()
    return Path("~/.local/share/calhooks").expanduser() / DEV_SUBDIR


def _encryption_key(data_dir: Path) -> str:
    """``CALHOOKS_ENCRYPTION_KEY``, or the dev loop's own key kept in its data directory."""
    from calhooks.service.core.secretbox import generate_key

    given = os.environ.get("CALHOOKS_ENCRYPTION_KEY")
    if given:
        return given
    path = data_dir / "encryption.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key())
    return path.read_text().strip()


def _wipe_redis(data_dir: Path) -> None:
    """Start from an empty Redis, as the sandbox starts from its seed state - only in a
    directory ``calhooks dev`` made (its marker file), never in one it did not."""
    from calhooks.service.core.redisconn import SOCKET_NAME

    marker = data_dir / DEV_MARKER
    if data_dir.exists() and any(data_dir.iterdir()) and not marker.exists():
        typer.echo(f"note: {data_dir} was not made by `calhooks dev`: its data is kept", err=True)
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("calhooks dev data: wiped at each `calhooks dev` start\n")
    directory = data_dir / "redis"
    if _answers(directory / SOCKET_NAME):
        _stop_redis(f"unix://{directory / SOCKET_NAME}")
    shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(data_dir / "spool", ignore_errors=True)


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
