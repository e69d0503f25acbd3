"""``calhooks connections``: the Cal.com accounts MCP clients pick per call by PCID.

``add`` stores one (credentials encrypted with ``CALHOOKS_ENCRYPTION_KEY``, in Redis so
every web replica sees it), prints its PCID and says how its Cal.com webhook will be made
(by the web process with ``CALHOOKS_WEBHOOKS_AUTO_APPLY``, else by ``calhooks webhooks
apply --connection``); ``list`` shows them without any secret; ``remove`` deletes one - its
own webhook in Cal.com first, then the connection, then its webhook secrets
(``service.subscriptions.removal``); ``test`` makes a cheap read-only call with one;
``migrate`` rewrites connections stored by older versions in the sealed-whole form.

Keys never travel in the command line (``ps`` and shell history show it): ``add`` reads an
API key or client secret from stdin (``-``), from an environment variable
(``--api-key-env NAME``), or prompts for it; a literal value is refused.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from calhooks.service.cli.output import configure_cli_logging, fail, print_json
from calhooks.service.mcp.tenants import DEFAULT_TENANT, TokenConfigError

if TYPE_CHECKING:
    from calhooks.service.connections.store import Connection, ConnectionInfo, ConnectionStore
    from calhooks.service.core.settings import Settings
    from calhooks.service.subscriptions.removal import Removal

app = typer.Typer(
    help="MCP connections: Cal.com accounts picked per tool call by their PCID.",
    no_args_is_help=True,
)

#: Read-only, allowed to every org member, one item: the cheapest proof a key works.
TEST_TOOL = "cal_organizations_attributes_controller_get_organization_attributes"

T = TypeVar("T")

TenantOption = Annotated[str, typer.Option(help="Tenant (bearer token) the connection belongs to.")]


def _run(operation: Callable[[ConnectionStore], Awaitable[T]]) -> T:
    """Run ``operation`` on the configured store; store problems end the command cleanly."""
    from redis.exceptions import RedisError

    from calhooks.service.connections.store import ConnectionStore, ConnectionStoreError, secret_box
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.core.settings import get_settings
    from calhooks.service.subscriptions.errors import SubscriptionError

    settings = get_settings()

    async def main() -> T:
        box = secret_box(settings)  # no key: say so before starting any Redis
        redis = create_redis(settings)
        try:
            return await operation(ConnectionStore(redis, box))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except (ConnectionStoreError, TokenConfigError, SubscriptionError) as exc:
        fail(str(exc))
    except (RedisError, OSError) as exc:
        fail(f"cannot reach Redis: {exc}")


def _secret_in_argv(option: str) -> NoReturn:
    fail(
        f"{option} takes '-' (read it from stdin) or use {option}-env VAR: a key written "
        "on the command line shows in `ps` and the shell history; nothing was stored"
    )


def _from_env(option: str, variable: str) -> str:
    value = os.environ.get(variable, "").strip()
    if not value:
        fail(f"{option}-env: environment variable {variable} is not set or empty")
    return value


def _read_api_key(
    api_key: str | None, api_key_env: str | None, client_id: str | None
) -> str | None:
    if api_key_env is not None:
        return _from_env("--api-key", api_key_env)
    if api_key == "-":
        return sys.stdin.readline().strip()
    if api_key is not None:
        _secret_in_argv("--api-key")
    if client_id is None:
        prompted: str = typer.prompt("Cal.com API key", hide_input=True)
        return prompted.strip()
    return None


def _read_client_secret(client_secret: str | None, client_secret_env: str | None) -> str | None:
    if client_secret_env is not None:
        return _from_env("--client-secret", client_secret_env)
    if client_secret == "-":  # noqa: S105 - "-" means: read it from stdin
        return sys.stdin.readline().strip()
    if client_secret is not None:
        _secret_in_argv("--client-secret")
    return None


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="A name for people (unique within the tenant).")],
    api_key: Annotated[
        str | None,
        typer.Option(help="'-': read the Cal.com API key from stdin (omitted: prompted)."),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(metavar="VAR", help="Read the API key from this environment variable."),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Platform OAuth client id (instead of an API key).")
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(help="'-': read the platform OAuth client secret from stdin."),
    ] = None,
    client_secret_env: Annotated[
        str | None,
        typer.Option(metavar="VAR", help="Read the client secret from this environment variable."),
    ] = None,
    org_id: Annotated[
        int | None, typer.Option(help="Default orgId for calls through this connection.")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Cal.com API base URL (default: CALHOOKS_API_URL).")
    ] = None,
    tenant: TenantOption = DEFAULT_TENANT,
    json_output: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Store a connection and print its PCID (the key is encrypted at rest, never shown)."""
    from calhooks.service.calcom.client import Credentials

    secret = _read_client_secret(client_secret, client_secret_env)
    credentials = Credentials(
        api_key=_read_api_key(api_key, api_key_env, client_id),
        client_id=client_id,
        client_secret=secret,
    )

    async def operation(store: ConnectionStore) -> Any:
        return await store.add(name, credentials, tenant=tenant, org_id=org_id, base_url=base_url)

    from calhooks.service.core.settings import get_settings

    info = _run(operation)
    if json_output:
        print_json(info.to_dict())
    else:
        typer.echo(info.pcid)
        typer.echo(
            f"connection {info.name!r} (tenant {info.tenant}) stored; pass PCID={info.pcid} "
            "to MCP tool calls; check it with `calhooks connections test`",
            err=True,
        )
    typer.echo(webhook_next_step(info, get_settings()), err=True)


def webhook_next_step(info: ConnectionInfo, settings: Settings) -> str:
    """What happens next for a new connection's Cal.com webhook, in one line."""
    if info.org_id is None:
        return (
            "webhook: none, as the connection has no org id (organization webhooks need one):"
            " add it again with --org-id for its events to reach calhooks"
        )
    url = f"{settings.webhook_path.rstrip('/')}/{info.pcid}"
    if settings.webhooks_auto_apply:
        return (
            "webhook: CALHOOKS_WEBHOOKS_AUTO_APPLY is on, so the web process creates it in"
            f" the organization within {settings.webhook_secrets_refresh:g} s"
            f" (CALHOOKS_WEBHOOK_SECRETS_REFRESH); its intake URL {url} works now"
        )
    ref = info.name if info.tenant == DEFAULT_TENANT else info.pcid
    return (
        "webhook: not created yet (CALHOOKS_WEBHOOKS_AUTO_APPLY is off): run"
        f" `calhooks webhooks apply --connection {ref}`; its intake URL {url} works now"
    )


@app.command("list")
def list_connections(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's connections.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List connections: PCID, name, tenant, auth kind, org id, base URL (never keys)."""

    async def operation(store: ConnectionStore) -> Any:
        return await store.connections(tenant)

    infos = _run(operation)
    if json_output:
        print_json([info.to_dict() for info in infos])
        return
    if not infos:
        typer.echo("no connections (add one with `calhooks connections add NAME`)", err=True)
        return
    rows = [("PCID", "NAME", "TENANT", "AUTH", "ORG", "BASE URL", "CREATED")]
    rows += [
        (
            i.pcid,
            i.name,
            i.tenant,
            i.auth,
            "" if i.org_id is None else str(i.org_id),
            i.base_url or "(default)",
            i.created_at,
        )
        for i in infos
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


@app.command()
def remove(
    ref: Annotated[str, typer.Argument(help="PCID, or name within --tenant.")],
    tenant: TenantOption = DEFAULT_TENANT,
    keep_webhook: Annotated[
        bool,
        typer.Option(
            "--keep-webhook",
            help="Leave Cal.com alone (no call is made): the connection's webhook, if any,"
            " stays and keeps delivering to a URL that refuses everything. Its secrets in"
            " Redis are deleted all the same.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove the connection even when its webhook cannot be deleted (Cal.com"
            " unreachable, key revoked); that webhook then has to be deleted by hand.",
        ),
    ] = False,
) -> None:
    """Delete a connection, cleanly: first calhooks' own webhook in its organization
    (deleted with the connection's credentials; webhooks calhooks does not own are left
    alone), then the connection, then its webhook secrets in Redis. MCP calls with its PCID
    and deliveries to its intake URL fail from then on.

    Deleting the webhook is the default because one left behind keeps sending the
    organization's bookings to an intake that can only refuse them. When Cal.com cannot be
    reached the connection is kept and the command exits 1: run it again later, or add
    --force (or --keep-webhook to not touch Cal.com at all). The webhook is recognised by
    its mark for CALHOOKS_WEBHOOK_DEPLOYMENT: run this with the web pods' deployment name.
    """
    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.core.logs import settings_secrets
    from calhooks.service.core.settings import get_settings
    from calhooks.service.subscriptions.removal import remove_connection
    from calhooks.service.subscriptions.targets import Target

    settings = get_settings()
    configure_cli_logging(settings_secrets(settings))

    async def operation(store: ConnectionStore) -> tuple[Connection, Removal] | None:
        found = await store.find(ref, tenant=tenant)
        if found is None:
            return None
        target = Target(found)
        async with CalcomClient.from_settings(settings) as cal:
            removal = await remove_connection(
                cal,
                store,
                target,
                target.store(settings, store.redis),
                keep_webhook=keep_webhook,
                force=force,
            )
        return found, removal

    outcome = _run(operation)
    if outcome is None:
        fail(f"no connection {ref!r} (tenant {tenant})")
    found, removal = outcome
    info = found.info
    if removal.webhook_error is not None:
        url = f"{settings.webhook_path.rstrip('/')}/{info.pcid}"
        typer.echo(
            f"warning: its Cal.com webhook could not be deleted ({removal.webhook_error}):"
            f" delete the webhook delivering to {url} in org {info.org_id} by hand",
            err=True,
        )
    typer.echo(f"removed {info.name!r} ({info.pcid}): " + removal_summary(removal, info))


def removal_summary(removal: Removal, info: ConnectionInfo) -> str:
    """What ``remove`` did, after the connection's name, in one line."""
    parts = []
    if removal.webhook_error is not None:
        parts.append("its Cal.com webhook may remain (--force)")
    elif removal.deleted:
        ids = ", ".join(removal.deleted)
        parts.append(f"deleted its Cal.com webhook {ids} in org {info.org_id}")
    elif removal.checked:
        parts.append(f"it had no webhook in org {info.org_id}")
    elif info.org_id is None:
        parts.append("no org id, so no webhook to delete")
    else:
        parts.append("Cal.com left alone (--keep-webhook)")
    if removal.foreign_kept:
        parts.append(f"left the organization's {removal.foreign_kept} other webhook(s) alone")
    parts.append(f"deleted {removal.keys_deleted} webhook-secret key(s)")
    return "; ".join(parts)


@app.command()
def migrate() -> None:
    """Rewrite connections stored by older versions so all their fields are sealed."""

    async def operation(store: ConnectionStore) -> int:
        return await store.migrate()

    typer.echo(f"rewrote {_run(operation)} connection(s) in the sealed-whole form")


@app.command("test")
def check(
    ref: Annotated[str, typer.Argument(help="PCID, or name within --tenant.")],
    tenant: TenantOption = DEFAULT_TENANT,
    org_id: Annotated[
        int | None, typer.Option(help="orgId to try (default: the connection's).")
    ] = None,
) -> None:
    """Call a cheap read-only tool (list one attribute) with the connection's credentials."""
    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.calcom.errors import ToolError
    from calhooks.service.core.settings import get_settings

    settings = get_settings()

    async def operation(store: ConnectionStore) -> Connection | None:
        return await store.find(ref, tenant=tenant)

    found = _run(operation)
    if found is None:
        fail(f"no connection {ref!r} (tenant {tenant})")
    target_org = org_id or found.info.org_id or settings.org_id
    if target_org is None:
        fail("the connection has no org id: pass --org-id")

    async def call() -> tuple[int, float]:
        async with CalcomClient.from_settings(settings, retries=0) as base:
            client = base.with_credentials(
                found.credentials, base_url=found.info.base_url, org_id=target_org
            )
            started = time.perf_counter()
            response = await client.request(TEST_TOOL, {"take": 1})
            return response.status, (time.perf_counter() - started) * 1000

    try:
        status, elapsed = asyncio.run(call())
    except ToolError as exc:
        fail(f"{found.info.name!r} failed: {exc}")
    url = found.info.base_url or settings.api_url
    typer.echo(
        f"ok: {found.info.name!r} reached Cal.com at {url} as org {target_org} "
        f"(HTTP {status}, {elapsed:.0f} ms)"
    )
