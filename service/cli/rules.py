"""``calhooks rules``: check a rules file, and try it on an event (dry, or against a sandbox).

* ``calhooks rules check FILE`` - loads and validates the file as the workers would (with
  ``CALHOOKS_ORG_ID`` and ``CALHOOKS_RULES_ENV`` laid over its ``env:``); prints a summary,
  or every problem on stderr and exits 1. The connections and tenants the file names
  (``connections:``, a rule's ``connections:``/``tenants:``) are checked against the
  connection store when Redis answers and ``CALHOOKS_ENCRYPTION_KEY`` is set - an unknown
  name is a problem, with a did-you-mean; otherwise the summary says they were not checked.
* ``calhooks rules test FILE --event EVENT.json`` - prints, per rule, whether the event
  matches (and why not) and the calls it would make with their evaluated parameters.
  ``EVENT.json`` is a delivery body as Cal.com sends it (``examples/events/``,
  ``tests/fixtures/webhooks/``) or an event as ``calhooks events show`` prints it. With
  ``--against sandbox`` the calls are made, for real, against a sandbox Cal.com
  (``calhooks sandbox``; ``--sandbox-url``, Acme's seeded admin key and org id by default),
  so later steps see real outputs; the URL must answer as a sandbox (its ``/_sandbox/``
  admin surface), so a real Cal.com is never written to by mistake. ``--source reconcile``
  runs it as an event a reconciliation pass recovered (``event.source``; default: the
  event's own, ``webhook`` for a delivery body). ``--connection NAME|PCID`` tries it as an
  event of that stored connection: the rules for it (``connections:``/``tenants:``), its
  ``env`` and org id (the calls of ``--against sandbox`` still go to the sandbox, with the
  sandbox's key). Exits 1 when a rule fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from calhooks.service.cli.output import fail, print_json

if TYPE_CHECKING:
    from calhooks.service.calcom import CalcomClient
    from calhooks.service.core.settings import Settings
    from calhooks.workers.rules import Invoke, RuleSet, StepCall
    from calhooks.workers.rules.dryrun import DryRunReport
    from calhooks.workers.rules.scope import Origin

app = typer.Typer(help="Check rules files and try them on an event.", no_args_is_help=True)

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8788"

FileArgument = Annotated[
    Path, typer.Argument(help="The rules file (YAML).", dir_okay=False, show_default=False)
]


def _load(path: Path, env: dict[str, Any]) -> RuleSet:
    from calhooks.workers.rules import RulesError, load_rules

    try:
        return load_rules(path, env=env)
    except RulesError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@app.command()
def check(
    file: FileArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Validate FILE; list every problem (file:line, rule, step) and exit 1 if any."""
    from calhooks.service.core.settings import get_settings
    from calhooks.workers.rules import rules_env

    settings = get_settings()
    rules = _load(file, rules_env(settings))
    names_checked = None
    if rules.connections or any(not rule.audience.everyone for rule in rules):
        names_checked = asyncio.run(_check_connection_names(rules, settings))
    if as_json:
        names = [rule.name for rule in rules]
        summary: dict[str, Any] = {
            "file": str(file),
            "rules": names,
            "triggers": sorted(rules.triggers),
        }
        if names_checked is not None:
            summary["connection_names"] = names_checked
        print_json(summary)
        return
    triggers = ", ".join(sorted(rules.triggers)) or "none"
    count = len(rules)
    typer.echo(f"{file}: {count} rule{'s' if count != 1 else ''}, OK; triggers: {triggers}")
    if names_checked is not None:
        typer.echo(f"connection names: {names_checked}")


async def _check_connection_names(rules: RuleSet, settings: Settings) -> str:
    """Check the names ``rules`` gives connections and tenants against the connection store:
    exit 1 listing the unknown ones; else say whether they were checked, and why not."""
    from redis.exceptions import RedisError

    from calhooks.service.connections.store import ConnectionStore, ConnectionStoreError
    from calhooks.service.core.redisconn import create_redis
    from calhooks.workers.rules import RulesError
    from calhooks.workers.rules.scope import reference_problems

    if settings.encryption_key is None:
        return "not checked (CALHOOKS_ENCRYPTION_KEY is not set: no connection store)"
    redis = create_redis(settings)
    try:
        store = ConnectionStore.from_settings(settings, redis)
        async with asyncio.timeout(_STORE_TIMEOUT):
            stored = await store.connections()
    except ConnectionStoreError as error:
        return f"not checked ({error})"
    except (RedisError, OSError, TimeoutError) as error:
        reason = str(error) or type(error).__name__
        return f"not checked (the connection store in Redis is unreachable: {reason})"
    finally:
        await redis.aclose()
    problems = reference_problems(rules.source, rules.rules, rules.connections, stored)
    if problems:
        typer.echo(str(RulesError(problems)), err=True)
        raise typer.Exit(1)
    return f"checked against {len(stored)} stored connection{'s' if len(stored) != 1 else ''}"


#: Seconds ``rules check`` waits for the connection store before saying it did not check.
_STORE_TIMEOUT = 5.0


def _read_event(path: Path) -> Any:
    from calhooks.service.events import BodyError, Event, event_from_body

    try:
        raw = path.read_bytes()
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror or error}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        fail(f"{path} is not JSON: {error}")
    try:
        if isinstance(data, dict) and "triggerEvent" not in data and "trigger" in data:
            return Event.from_dict(data)  # as `calhooks events show` prints it
        return event_from_body(raw, received_at=time.time())
    except (BodyError, ValueError) as error:
        fail(f"{path} is not a Cal.com delivery or event: {error}")


def _booking(event: Any) -> dict[str, str] | None:
    """The booking the event is about and the uid it replaced (a reschedule), as the
    workers' ordering reads them; the chain's first uid is known only to the workers."""
    from calhooks.workers.ordering import booking_uid, replaced_uid

    uid = booking_uid(event.payload)
    if uid is None:
        return None
    replaces = replaced_uid(event.trigger, event.payload)
    return {"uid": uid, **({"replaces": replaces} if replaces else {})}


def booking_text(booking: dict[str, str]) -> str:
    text = f"booking {booking['uid']}"
    return text + (f" (replaces {booking['replaces']})" if "replaces" in booking else "")


async def _sandbox_problem(url: str) -> str | None:
    """Why ``url`` is not a sandbox to run against, or ``None``: it must answer as one."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"{url}/_sandbox/rate-limit")
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        return f"no sandbox answers at {url} ({reason}); start one with `calhooks sandbox`"
    if response.status_code != 200:
        status = response.status_code
        return f"{url} is not a calhooks sandbox (GET /_sandbox/rate-limit: {status})"
    return None


def calling(client: CalcomClient) -> Invoke:
    """An ``invoke`` that makes each call with ``client`` (a sandbox's, for a trial run)."""

    async def invoke(call: StepCall) -> Any:
        return await client.call(call.tool, **call.params)

    return invoke


async def _run(
    rules: RuleSet, event: Any, sandbox: CalcomClient | None, origin: Origin | None
) -> DryRunReport:
    from calhooks.workers.rules.dryrun import dry_run, record_only

    if sandbox is None:
        return await dry_run(rules, event, invoke=record_only, origin=origin)
    async with sandbox:
        problem = await _sandbox_problem(sandbox.base_url)
        if problem is not None:
            fail(problem)
        return await dry_run(rules, event, invoke=calling(sandbox), origin=origin)


async def _origin(ref: str, tenant: str, settings: Settings) -> Origin:
    """The stored connection ``ref`` (a PCID, or a name in ``tenant``) as the rules see it."""
    from redis.exceptions import RedisError

    from calhooks.service.connections.store import ConnectionStore, ConnectionStoreError
    from calhooks.service.core.redisconn import create_redis
    from calhooks.workers.rules.scope import Origin

    redis = create_redis(settings)
    try:
        store = ConnectionStore.from_settings(settings, redis)
        async with asyncio.timeout(_STORE_TIMEOUT):
            found = await store.find(ref, tenant=tenant)
    except ConnectionStoreError as error:
        fail(str(error))
    except (RedisError, OSError, TimeoutError) as error:
        fail(f"cannot read the connection store: {str(error) or type(error).__name__}")
    finally:
        await redis.aclose()
    if found is None:
        fail(f"no connection {ref!r} (a PCID, or a name in tenant {tenant!r})")
    info = found.info
    return Origin(info.pcid, info.name, info.tenant, info.org_id)


@app.command("test")
def try_on_event(
    file: FileArgument,
    event: Annotated[
        Path,
        typer.Option("--event", help="A delivery body (or stored event) as JSON.", dir_okay=False),
    ],
    against: Annotated[
        str | None,
        typer.Option("--against", help="`sandbox`: make the calls against a sandbox Cal.com."),
    ] = None,
    sandbox_url: Annotated[
        str, typer.Option("--sandbox-url", help="Base URL of the sandbox.")
    ] = DEFAULT_SANDBOX_URL,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="Sandbox API key (default: Acme's seeded admin key)."),
    ] = None,
    org_id: Annotated[
        int | None,
        typer.Option(
            "--org-id", help="env.org_id for the run (default with --against sandbox: 1)."
        ),
    ] = None,
    connection: Annotated[
        str | None,
        typer.Option(
            "--connection",
            help="Try it as an event of this stored connection (name or PCID): its rules, env"
            " and org id.",
        ),
    ] = None,
    tenant: Annotated[
        str, typer.Option("--tenant", help="The tenant of --connection given by name.")
    ] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    all_rules: Annotated[
        bool, typer.Option("--all/--matching", help="Also list the rules that do not match.")
    ] = True,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="event.source for the run: `webhook` or `reconcile` (default: the event's own).",
        ),
    ] = None,
) -> None:
    """Show what FILE's rules would do with one event: matches, then each call's parameters."""
    from calhooks.service.calcom import CalcomClient, Credentials
    from calhooks.service.core.settings import get_settings
    from calhooks.service.events import RECONCILE_SOURCE, WEBHOOK_SOURCE
    from calhooks.workers.rules import rules_env
    from calhooks.workers.rules.dryrun import format_report

    if against not in (None, "sandbox"):
        fail(f"--against takes `sandbox`, not {against!r}")
    if source not in (None, WEBHOOK_SOURCE, RECONCILE_SOURCE):
        fail(f"--source takes `{WEBHOOK_SOURCE}` or `{RECONCILE_SOURCE}`, not {source!r}")
    settings = get_settings()
    env = rules_env(settings)
    origin = asyncio.run(_origin(connection, tenant, settings)) if connection else None
    client = None
    if against == "sandbox":
        from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID

        sandbox_org = org_id if org_id is not None else SANDBOX_ORG_ID
        env["org_id"] = sandbox_org
        if origin is not None:  # the calls go to the sandbox: its org, not the connection's
            origin = dataclasses.replace(origin, org_id=sandbox_org)
        client = CalcomClient(
            base_url=sandbox_url.rstrip("/"),
            credentials=Credentials(api_key=api_key or SANDBOX_API_KEY),
            org_id=sandbox_org,
        )
    elif org_id is not None:
        env["org_id"] = org_id
        if origin is not None:
            origin = dataclasses.replace(origin, org_id=org_id)
    rules = _load(file, env)
    loaded = _read_event(event)
    if source is not None:
        loaded = dataclasses.replace(loaded, source=source)
    report = asyncio.run(_run(rules, loaded, client, origin))
    booking = _booking(loaded)
    if as_json:
        print_json({**report.to_dict(), **({"booking": booking} if booking else {})})
    else:
        lines = format_report(report, show_unmatched=all_rules).split("\n")
        if booking:
            lines.insert(1, booking_text(booking))
        typer.echo("\n".join(lines))
    if report.failed:
        raise typer.Exit(1)
