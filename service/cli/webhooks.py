"""``calhooks webhooks``: the organization webhook calhooks registers for itself.

``plan`` shows what ``apply`` would change (``--exit-code``: exit 2 when something would);
``apply`` makes it so (``--prune`` also deletes this deployment's stale webhooks);
``rotate`` replaces the signing secret with no delivery rejected; ``test`` has a PING
delivered and says whether the intake verified it; ``secrets`` lists the stored secrets.
No command prints a secret unless given ``--show-secret``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

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

    Operation = Callable[[Settings, WebhookSecretStore, CalcomClient], Awaitable[T]]

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


def _run(operation: Operation[T]) -> T:
    """Run ``operation`` with the settings, the secret store and a Cal.com client."""
    from redis.exceptions import RedisError

    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.calcom.errors import ToolError
    from calhooks.service.core.logs import settings_secrets
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.core.settings import get_settings
    from calhooks.service.subscriptions.errors import SubscriptionError
    from calhooks.service.subscriptions.secret_store import WebhookSecretStore

    settings = get_settings()
    # Warnings (retries, an expired lock) on stderr with -v; stdout carries only the output.
    configure_cli_logging(settings_secrets(settings))

    async def main() -> T:
        redis = create_redis(settings)
        try:
            store = WebhookSecretStore.from_settings(settings, redis)
            async with CalcomClient.from_settings(settings) as cal:
                return await operation(settings, store, cal)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except (SubscriptionError, ToolError) as exc:
        fail(str(exc))
    except (RedisError, OSError) as exc:
        fail(f"cannot reach Redis: {exc}")


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


def _desired(settings: Settings) -> DesiredFactory:
    from calhooks.service.subscriptions.desired import desired_factory
    from calhooks.service.subscriptions.errors import DesiredStateError
    from calhooks.service.subscriptions.rule_triggers import load_rule_triggers

    try:
        return desired_factory(settings, load_rule_triggers(settings))
    except DesiredStateError as exc:
        fail(str(exc))


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
) -> None:
    """Show what `apply` would change in the organization's webhooks (changes nothing)."""
    from calhooks.service.subscriptions import report
    from calhooks.service.subscriptions.apply import plan_current

    _check_prerequisites()

    async def operation(settings: Settings, store: WebhookSecretStore, cal: CalcomClient) -> Plan:
        return await plan_current(cal, store, _desired(settings), prune=prune)

    plan = _run(operation)
    if as_json:
        print_json(report.plan_dict(plan, show_secret=show_secret))
    else:
        _echo(report.plan_lines(plan, show_secret=show_secret))
    _note_without_rules()
    if exit_code and plan.has_changes:
        raise typer.Exit(2)


@app.command("apply")
def apply_command(
    prune: Prune = False, as_json: AsJson = False, show_secret: ShowSecret = False
) -> None:
    """Create, update or re-activate calhooks' webhook (and generate its secret) as planned."""
    from calhooks.service.subscriptions import report
    from calhooks.service.subscriptions.apply import apply_webhooks

    _check_prerequisites()

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient
    ) -> ApplyResult:
        return await apply_webhooks(
            cal,
            store,
            _desired(settings),
            prune=prune,
            refresh_interval=settings.webhook_secrets_refresh,
        )

    result = _run(operation)
    if as_json:
        print_json(report.apply_dict(result, show_secret=show_secret))
    else:
        _echo(report.apply_lines(result, show_secret=show_secret))
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
) -> None:
    """Give the webhook a new secret; deliveries signed with the old one verify meanwhile."""
    from calhooks.service.subscriptions import report
    from calhooks.service.subscriptions.rotate import rotate_secret

    _check_prerequisites()

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient
    ) -> RotationResult:
        return await rotate_secret(
            cal,
            store,
            _desired(settings),
            grace=settings.webhook_rotation_grace if grace is None else grace,
            refresh_interval=settings.webhook_secrets_refresh,
        )

    result = _run(operation)
    if as_json:
        print_json(report.rotation_dict(result, show_secret=show_secret))
    else:
        _echo(report.rotation_lines(result, show_secret=show_secret))


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

    _check_prerequisites()

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient
    ) -> ping.PingOutcome:
        snapshot = await store.snapshot()
        desired = _desired(settings)(snapshot.current)
        webhook = plan_webhooks(desired, await list_webhooks(cal)).kept
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

    outcome = _run(operation)
    if as_json:
        print_json(outcome.to_dict())
    else:
        if outcome.route == "sandbox":
            how = f"the sandbox pinged webhook {outcome.webhook_id} -> {outcome.url}"
        else:
            how = f"calhooks sent a PING signed with its current secret -> {outcome.url}"
            if not direct:
                how += " (Cal.com has no API for test deliveries)"
        _echo([how, outcome.verdict()])
    if not outcome.verified:
        raise typer.Exit(1)


@app.command("secrets")
def secrets_command(as_json: AsJson = False, show_secret: ShowSecret = False) -> None:
    """List the webhook secrets kept in Redis: current, valid until when (no values)."""
    from calhooks.service.subscriptions import report

    async def operation(
        settings: Settings, store: WebhookSecretStore, cal: CalcomClient
    ) -> list[dict[str, Any]]:
        return report.secrets_rows(await store.snapshot(), time.time(), show_secret=show_secret)

    rows = _run(operation)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no webhook secrets yet (`calhooks webhooks apply` generates one)")
    for row in rows:
        state = "current" if row["current"] else ("valid" if row["valid"] else "expired")
        until = f" until {row['expires']}" if row["expires"] else ""
        value = f" {row['secret']}" if show_secret else ""
        typer.echo(f"{row['id']}  {state}{until}  created {row['created']}{value}")
