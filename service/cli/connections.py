"""``calhooks connections``: the Cal.com accounts MCP clients pick per call by PCID.

``add`` stores one (credentials encrypted with ``CALHOOKS_ENCRYPTION_KEY``, in Redis so
every web replica sees it) and prints its PCID; ``list`` shows them without any secret;
``remove`` deletes one; ``test`` makes a cheap read-only call with one; ``migrate``
rewrites connections stored by older versions in the sealed-whole form.

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

from calhooks.service.cli.output import fail, print_json
from calhooks.service.mcp.tenants import DEFAULT_TENANT, TokenConfigError

if TYPE_CHECKING:
    from calhooks.service.connections.store import Connection, ConnectionStore

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
    except (ConnectionStoreError, TokenConfigError) as exc:
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

    info = _run(operation)
    if json_output:
        print_json(info.to_dict())
        return
    typer.echo(info.pcid)
    typer.echo(
        f"connection {info.name!r} (tenant {info.tenant}) stored; pass PCID={info.pcid} "
        "to MCP tool calls; check it with `calhooks connections test`",
        err=True,
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
) -> None:
    """Delete a connection; MCP calls with its PCID fail from then on."""

    async def operation(store: ConnectionStore) -> Connection | None:
        found = await store.find(ref, tenant=tenant)
        if found is not None:
            await store.remove(found.info.pcid)
        return found

    found = _run(operation)
    if found is None:
        fail(f"no connection {ref!r} (tenant {tenant})")
    typer.echo(f"removed {found.info.name!r} ({found.info.pcid})")


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
