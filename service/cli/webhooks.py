"""``calhooks webhooks``: the organization webhook calhooks registers for itself.

``plan`` shows what ``apply`` would change (``--exit-code``: exit 2 when something would);
``apply`` makes it so (``--prune`` also deletes this deployment's stale webhooks);
``rotate`` replaces the signing secret with no delivery rejected; ``test`` has a PING
delivered and says whether the intake verified it; ``secrets`` lists the stored secrets.
No command prints a secret unless given ``--show-secret``.

Every command works on the environment's organization (``CALHOOKS_API_KEY``,
``CALHOOKS_ORG_ID``) unless given ``--connection NAME|PCID`` (repeatable) or
``--all-connections``: then it works on each of those connections' organizations in turn,
with that connection's credentials, its own secrets (store ``<deployment>.<pcid>``) and its
own intake URL (``<webhook path>/<pcid>``) - see ``service.subscriptions.targets``. The output
is then one section per connection (text), or a list of ``{"connection", "name", "result"}``
or ``{"connection", "name", "error"}`` (``--json``); one connection failing does not stop the
others, and the command exits 1 when any failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

import typer

from calhooks.service.cli.output import configure_cli_logging, fail, print_json

T = TypeVar("T")

if TYPE_CHECKING:
    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.core.settings import Settings
    from calhooks.service.subscriptions import ping
    from calhooks.service.subscriptions.apply import ApplyResult
    from calhooks.service.subscriptions.desired import DesiredFactory
    from calhooks.service.subscriptions.plan import Plan
    from calhooks.service.subscriptions.rotate import RotationResult
    from calhooks.service.subscriptions.secret_store import WebhookSecretStore
    from calhooks.service.subscriptions.targets import Target

    #: One organization's work: the settings, its secret store, a client with its
    #: credentials, and which organization it is.
    Operation = Callable[[Settings, WebhookSecretStore, CalcomClient, Target], Awaitable[T]]

app = typer.Typer(
    help="The Cal.com webhook calhooks registers for itself: plan, apply, rotate, test.",
    no_args_is_help=True,
)

ShowSecret = Annotated[
    bool, typer.Option("--show-secret", help="Print calhooks' webhook secret (it is hidden).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Prune = Annotated[
    bool, typer.Option("--prune", help="Also delete this deployment's stale webhooks.")
]
ConnectionRefs = Annotated[
    list[str] | None,
    typer.Option(
        "--connection",
        help="A connection (name or PCID) whose organization to work on instead of the"
        " environment's; repeatable.",
    ),
]
AllConnections = Annotated[
    bool,
    typer.Option("--all-connections", help="Work on every connection's organization."),
]


#: Organizations worked on at once with connection options (an apply may wait a refresh
#: interval for the intake replicas; one after the other, hundreds would take long).
CONCURRENCY = 4


@dataclass(frozen=True)
class Scope:
    """Which organizations a command works on: the environment's, or connections."""

    refs: tuple[str, ...] = ()
    everything: bool = False

    @property
    def connections(self) -> bool:
        return bool(self.refs) or self.everything


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One organization's result, or why it failed (with ``--connection``/``--all-connections``)."""

    target: Target
    result: T | None = None
    error: str | None = None


def _scope(refs: list[str] | None, everything: bool) -> Scope:
    if refs and everything:
        fail("give --connection or --all-connections, not both")
    return Scope(tuple(refs or ()), everything)


def _run(operation: Operation[T], scope: Scope = Scope()) -> list[Outcome[T]]:
    """Run ``operation`` for each organization of ``scope``, with the settings, that
    organization's secret store and a Cal.com client with its credentials.

    The environment's organization alone (no connection option): a failure ends the command
    as before. Connections: each failure is kept in its ``Outcome`` and the others go on.
    """
    from redis.exceptions import RedisError

    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.calcom.errors import ToolError
    from calhooks.service.core.logs import settings_secrets
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.core.settings import get_settings
    from calhooks.service.subscriptions.errors import SubscriptionError
    from calhooks.service.subscriptions.targets import ENVIRONMENT, TargetError, connection_targets

    settings = get_settings()
    # Warnings (retries, an expired lock) on stderr with -v; stdout carries only the output.
    configure_cli_logging(settings_secrets(settings))

    async def one(target: Target, cal: CalcomClient, redis: Any) -> Outcome[T]:
        try:
            target.check()
            store = target.store(settings, redis)
            result = await operation(settings, store, target.client(cal), target)
        except (SubscriptionError, ToolError) as exc:
            if not scope.connections:
                raise
            return Outcome(target, error=str(exc))
        return Outcome(target, result)

    async def main() -> list[Outcome[T]]:
        redis = create_redis(settings)
        try:
            targets = [ENVIRONMENT]
            if scope.connections:
                targets = await connection_targets(
                    settings, redis, scope.refs, everything=scope.everything
                )
                if not targets:
                    raise TargetError(
                        "no connections stored (add one with `calhooks connections add`)"
                    )
            gate = asyncio.Semaphore(CONCURRENCY)

            async def gated(target: Target, cal: CalcomClient) -> Outcome[T]:
                async with gate:
                    return await one(target, cal, redis)

            async with CalcomClient.from_settings(settings) as cal:
                return list(await asyncio.gather(*(gated(t, cal) for t in targets)))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except (SubscriptionError, ToolError) as exc:
        fail(str(exc))
    except (RedisError, OSError) as exc:
        fail(f"cannot reach Redis: {exc}")


def _show(
    outcomes: list[Outcome[T]],
    scope: Scope,
    *,
    as_json: bool,
    to_dict: Callable[[T], Any],
    to_lines: Callable[[T], list[str]],
) -> None:
    """Print the outcomes: as before for the environment's organization alone, else one
    section (or JSON object) per connection; exit 1 when any connection failed."""
    if not scope.connections:
        [outcome] = outcomes
        assert outcome.result is not None  # a failure already ended the command
        if as_json:
            print_json(to_dict(outcome.result))
        else:
            _echo(to_lines(outcome.result))
        return
    if as_json:
        print_json(
            [
                {
                    "connection": o.target.pcid,
                    "name": o.target.name,
                    **({"error": o.error} if o.result is None else {"result": to_dict(o.result)}),
                }
                for o in outcomes
            ]
        )
    else:
        for index, o in enumerate(outcomes):
            if index:
                typer.echo("")
            if o.result is None:
                typer.echo(f"{o.target.label}: error: {o.error}")
            else:
                typer.echo(f"{o.target.label}:")
                _echo([f"  {line}" for line in to_lines(o.result)])
    if any(o.result is None for o in outcomes):
        raise typer.Exit(1)


def _note_without_rules() -> None:
    """Warn (stderr) that without the rules file only the configured extras are subscribed."""
    from calhooks.service.core.settings import get_settings

    if get_settings().rules_file is None:
        typer.echo(
            "note: CALHOOKS_RULES_FILE is not set: the webhook subscribes only to"
            " CALHOOKS_WEBHOOK_EXTRA_TRIGGERS",
            err=True,
        )


def prerequisites(settings: Settings) -> list[str]:
    """Every setting missing or wrong for managing the webhook, all at once."""
    from calhooks.service.core.secretbox import SecretBox, SecretBoxError
    from calhooks.service.subscriptions.desired import desired_problems
    from calhooks.service.subscriptions.errors import DesiredStateError
    from calhooks.service.subscriptions.rule_triggers import load_rule_triggers

    problems = []
    if settings.encryption_key is None:
        problems.append(
            "CALHOOKS_ENCRYPTION_KEY is required to keep webhook secrets in Redis"
            " (make one with: calhooks keygen)"
        )
    else:
        try:
            SecretBox(settings.encryption_key.get_secret_value())
        except SecretBoxError as exc:
            problems.append(f"CALHOOKS_ENCRYPTION_KEY: {exc}")
    triggers: tuple[str, ...] | None
    try:
        triggers = load_rule_triggers(settings)
    except DesiredStateError as exc:
        problems.append(str(exc))
        triggers = None
    return problems + desired_problems(settings, triggers)


def _check_prerequisites() -> None:
    from calhooks.service.core.settings import get_settings

    problems = prerequisites(get_settings())
    if len(problems) == 1:
        fail(problems[0])
    if problems:
        fail(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


def _desired(settings: Settings, target: Target) -> DesiredFactory:
    return target.desired(settings, target.rule_triggers(settings))


def _echo(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


@app.command("plan")
def plan_command(
    prune: Prune = False,
    as_json: AsJson = False,
    show_secret: ShowSecret = False,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 2 when apply would change something.")
    ] = False,
    connection: ConnectionRefs = None,
    all_connections: AllConnections = False,
) -> None:
    """Show what `apply` would change in the organization's webhooks (changes nothing)."""
    from calhooks.service.subscriptions import report
    from calhooks.service.subscriptions.apply import plan_current

    scope = _scope(connection, all_connections)
    _check_prerequisites()

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient, target: Target
    ) -> Plan:
        desired = _desired(settings, target)
        return await plan_current(cal, store, desired, prune=prune, org_id=target.org_id)

    outcomes = _run(operation, scope)
    try:
        _show(
            outcomes,
            scope,
            as_json=as_json,
            to_dict=lambda plan: report.plan_dict(plan, show_secret=show_secret),
            to_lines=lambda plan: report.plan_lines(plan, show_secret=show_secret),
        )
    finally:
        _note_without_rules()
    if exit_code and any(o.result is not None and o.result.has_changes for o in outcomes):
        raise typer.Exit(2)


@app.command("apply")
def apply_command(
    prune: Prune = False,
    as_json: AsJson = False,
    show_secret: ShowSecret = False,
    connection: ConnectionRefs = None,
    all_connections: AllConnections = False,
) -> None:
    """Create, update or re-activate calhooks' webhook (and generate its secret) as planned."""
    from calhooks.service.subscriptions import report
    from calhooks.service.subscriptions.apply import apply_webhooks

    scope = _scope(connection, all_connections)
    _check_prerequisites()

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient, target: Target
    ) -> ApplyResult:
        return await apply_webhooks(
            cal,
            store,
            _desired(settings, target),
            prune=prune,
            refresh_interval=settings.webhook_secrets_refresh,
            org_id=target.org_id,
            guard=target.guard(store),
        )

    outcomes = _run(operation, scope)
    try:
        _show(
            outcomes,
            scope,
            as_json=as_json,
            to_dict=lambda result: report.apply_dict(result, show_secret=show_secret),
            to_lines=lambda result: report.apply_lines(result, show_secret=show_secret),
        )
    finally:
        _note_without_rules()


@app.command("rotate")
def rotate_command(
    grace: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds the old secret stays valid (default: CALHOOKS_WEBHOOK_ROTATION_GRACE).",
        ),
    ] = None,
    as_json: AsJson = False,
    show_secret: ShowSecret = False,
    connection: ConnectionRefs = None,
    all_connections: AllConnections = False,
) -> None:
    """Give the webhook a new secret; deliveries signed with the old one verify meanwhile."""
    from calhooks.service.subscriptions import report
    from calhooks.service.subscriptions.rotate import rotate_secret

    scope = _scope(connection, all_connections)
    _check_prerequisites()

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient, target: Target
    ) -> RotationResult:
        return await rotate_secret(
            cal,
            store,
            _desired(settings, target),
            grace=settings.webhook_rotation_grace if grace is None else grace,
            refresh_interval=settings.webhook_secrets_refresh,
            org_id=target.org_id,
        )

    _show(
        _run(operation, scope),
        scope,
        as_json=as_json,
        to_dict=lambda result: report.rotation_dict(result, show_secret=show_secret),
        to_lines=lambda result: report.rotation_lines(result, show_secret=show_secret),
    )


@app.command("test")
def ping_command(
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            help="Send calhooks' own signed PING even when CALHOOKS_API_URL is the sandbox.",
        ),
    ] = False,
    as_json: AsJson = False,
    connection: ConnectionRefs = None,
    all_connections: AllConnections = False,
) -> None:
    """Have a PING delivered to the intake and say whether it verified the signature.

    Against the sandbox Cal.com the sandbox sends it; Cal.com has no API for test
    deliveries, so otherwise calhooks sends one signed with its current secret.
    """
    import httpx

    from calhooks.service.subscriptions import ping
    from calhooks.service.subscriptions.errors import PingError
    from calhooks.service.subscriptions.plan import plan_webhooks
    from calhooks.service.subscriptions.remote import list_webhooks

    scope = _scope(connection, all_connections)
    _check_prerequisites()

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient, target: Target
    ) -> ping.PingOutcome:
        snapshot = await store.snapshot()
        desired = _desired(settings, target)(snapshot.current)
        webhook = plan_webhooks(desired, await list_webhooks(cal, target.org_id)).kept
        async with httpx.AsyncClient(timeout=settings.api_timeout) as http:
            if not direct and await ping.is_sandbox(http, settings.api_url):
                if webhook is None:
                    raise PingError(
                        f"no webhook delivers to {desired.subscriber_url}: run"
                        " `calhooks webhooks apply` first"
                    )
                return await ping.sandbox_ping(http, settings.api_url, webhook.id)
            if snapshot.current is None:
                raise PingError("no webhook secret yet: run `calhooks webhooks apply` first")
            return await ping.direct_ping(
                http,
                desired.subscriber_url,
                snapshot.current,
                webhook_id=webhook.id if webhook else None,
            )

    def lines(outcome: ping.PingOutcome) -> list[str]:
        if outcome.route == "sandbox":
            how = f"the sandbox pinged webhook {outcome.webhook_id} -> {outcome.url}"
        else:
            how = f"calhooks sent a PING signed with its current secret -> {outcome.url}"
            if not direct:
                how += " (Cal.com has no API for test deliveries)"
        return [how, outcome.verdict()]

    outcomes = _run(operation, scope)
    _show(outcomes, scope, as_json=as_json, to_dict=lambda o: o.to_dict(), to_lines=lines)
    if not all(o.result is not None and o.result.verified for o in outcomes):
        raise typer.Exit(1)


@app.command("secrets")
def secrets_command(
    as_json: AsJson = False,
    show_secret: ShowSecret = False,
    connection: ConnectionRefs = None,
    all_connections: AllConnections = False,
) -> None:
    """List the webhook secrets kept in Redis: current, valid until when (no values)."""
    from calhooks.service.subscriptions import report

    scope = _scope(connection, all_connections)

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient, target: Target
    ) -> list[dict[str, Any]]:
        return report.secrets_rows(await store.snapshot(), time.time(), show_secret=show_secret)

    def lines(rows: list[dict[str, Any]]) -> list[str]:
        if not rows:
            return ["no webhook secrets yet (`calhooks webhooks apply` generates one)"]
        found = []
        for row in rows:
            state = "current" if row["current"] else ("valid" if row["valid"] else "expired")
            until = f" until {row['expires']}" if row["expires"] else ""
            value = f" {row['secret']}" if show_secret else ""
            found.append(f"{row['id']}  {state}{until}  created {row['created']}{value}")
        return found

    _show(_run(operation, scope), scope, as_json=as_json, to_dict=lambda rows: rows, to_lines=lines)
