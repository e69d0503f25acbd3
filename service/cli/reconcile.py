"""``calhooks reconcile``: one reconciliation pass now, or (``--dry-run``) what it would emit.

The pass is the workers' (``calhooks.workers.reconcile``): it lists memberships, users, OOO
entries, webhooks and bookings, diffs them against the snapshot in Redis and queues one
event per difference; the first pass only takes the baseline. It takes the same lock as the
workers' periodic pass, so it never runs alongside one. ``--dry-run`` lists everything,
writes nothing and prints the events a pass would queue now. docs/reconciliation.md.

Without options it reconciles the environment's organization (``CALHOOKS_ORG_ID``) as it
always did. ``--connection NAME|PCID`` (repeatable) or ``--all-connections`` reconcile those
connections' organizations instead, one after the other, each with its own credentials and
records, its events carrying the connection: one section per connection (a list of
``{"connection", "name", ...report}`` or ``{"connection", "name", "error"}`` with ``--json``);
one connection failing does not stop the others, and the command then exits 1.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from calhooks.service.cli.output import configure_cli_logging, fail, print_json

if TYPE_CHECKING:
    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.core.settings import Settings
    from calhooks.workers.reconcile.reconciler import RunReport


@dataclass(frozen=True)
class _Outcome:
    """One organization's pass, or why it did not run."""

    pcid: str | None
    name: str | None
    report: RunReport | None = None
    error: str | None = None


def reconcile(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the events a pass would queue; change nothing.")
    ] = False,
    budget: Annotated[
        int | None,
        typer.Option(
            help="Most list calls (default: CALHOOKS_RECONCILE_RATE_SHARE of the rate limit"
            " over CALHOOKS_RECONCILE_PERIOD; 0: no bound)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    connection: Annotated[
        list[str] | None,
        typer.Option(
            "--connection",
            help="A connection (name or PCID) whose organization to reconcile instead of the"
            " environment's; repeatable.",
        ),
    ] = None,
    all_connections: Annotated[
        bool,
        typer.Option("--all-connections", help="Reconcile every connection's organization."),
    ] = False,
) -> None:
    """Reconcile now: queue what Cal.com never delivered and org changes it has no webhook for.

    The first pass takes the baseline and queues nothing.
    """
    from calhooks.service.core.settings import get_settings

    settings = get_settings()
    configure_cli_logging()
    if connection and all_connections:
        fail("give --connection or --all-connections, not both")
    if not connection and not all_connections:
        if settings.org_id is None:
            fail("CALHOOKS_ORG_ID is not set: the organization to reconcile")
        report = asyncio.run(_run(dry_run=dry_run, budget=budget))
        if as_json:
            print_json(_report_dict(report, dry_run))
        else:
            _echo(report, dry_run)
        return
    outcomes = asyncio.run(
        _run_connections(tuple(connection or ()), all_connections, dry_run=dry_run, budget=budget)
    )
    if as_json:
        print_json(
            [
                {
                    "connection": o.pcid,
                    "name": o.name,
                    **({"error": o.error} if o.report is None else _report_dict(o.report, dry_run)),
                }
                for o in outcomes
            ]
        )
    else:
        for index, o in enumerate(outcomes):
            if index:
                typer.echo("")
            typer.echo(f"== {o.name or o.pcid} ({o.pcid})")
            if o.report is None:
                typer.echo(f"error: {o.error}")
            else:
                _echo(o.report, dry_run)
    if any(o.report is None for o in outcomes):
        raise typer.Exit(1)


def _report_dict(report: RunReport, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "calls": report.calls,
        "complete": report.complete,
        "baselined": report.baselined,
        "pending": report.pending,
        "seen": report.seen,
        "queued": report.queued,
        "events": [event.to_dict() for event in report.events],
    }


def _echo(report: RunReport, dry_run: bool) -> None:
    for event in report.events:
        payload = event.payload
        subject = payload.get("uid") or f"{payload.get('kind')} {payload.get('id')}"
        typer.echo(f"{event.trigger}  {subject}  {event.id[:12]}")
    verb = "would queue" if dry_run else f"queued {report.queued} of"
    typer.echo(
        f"{report.calls} calls; listed {', '.join(report.complete) or 'nothing'} completely"
        + (f"; baseline taken for {', '.join(report.baselined)}" if report.baselined else "")
        + (f"; {report.pending} continues next pass" if report.pending else "")
        + f"; {verb} {len(report.events)} events"
    )


def _budget(settings: Settings, budget: int | None, dry_run: bool) -> int | None:
    from calhooks.workers.reconcile import periodic

    if budget is None:
        budget = periodic.budget(
            settings.worker_rate_limit_per_minute,
            settings.reconcile_rate_share,
            settings.reconcile_period,
        )
    return None if dry_run or not budget else budget


async def _pass(
    settings: Settings,
    redis: Any,
    client: CalcomClient,
    *,
    org_id: int,
    dry_run: bool,
    budget: int | None,
    connection: str | None = None,
    name: str | None = None,
) -> RunReport:
    """One pass of one organization (``periodic.Busy`` when another holds its lock)."""
    from calhooks.workers.reconcile import periodic, records
    from calhooks.workers.reconcile.reconciler import Reconciler

    reconciler = Reconciler(
        redis,
        client,
        org_id=org_id,
        queue_name=settings.queue_name,
        dedupe_window=settings.dedupe_window,
        budget=_budget(settings, budget, dry_run),
        grace=settings.reconcile_grace,
        deployment=settings.webhook_deployment,
        connection=connection,
        name=name,
    )
    if dry_run:
        return await reconciler.run(dry_run=True)
    return await periodic.run_locked(
        reconciler, holder=f"calhooks reconcile on {records.this_process()}"
    )


async def _run(*, dry_run: bool, budget: int | None) -> RunReport:
    from redis.exceptions import RedisError

    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.calcom.errors import ToolError
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.core.settings import get_settings
    from calhooks.workers.reconcile import periodic

    settings = get_settings()
    assert settings.org_id is not None
    redis = create_redis(settings)
    client = CalcomClient.from_settings(settings)
    try:
        return await _pass(
            settings, redis, client, org_id=settings.org_id, dry_run=dry_run, budget=budget
        )
    except periodic.Busy:
        fail("another reconciliation pass is running (a worker's); try again shortly")
    except ToolError as exc:
        fail(str(exc))
    except (RedisError, OSError) as exc:
        fail(f"cannot reach Redis: {exc}")
    finally:
        await client.aclose()
        await redis.aclose()


async def _run_connections(
    refs: tuple[str, ...], everything: bool, *, dry_run: bool, budget: int | None
) -> list[_Outcome]:
    """One pass per connection named (or every one), in turn; each failure is kept."""
    from redis.exceptions import RedisError

    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.calcom.errors import ToolError
    from calhooks.service.connections.store import (
        Connection,
        ConnectionStore,
        ConnectionStoreError,
    )
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.core.settings import get_settings
    from calhooks.workers.reconcile import periodic

    settings = get_settings()
    redis = create_redis(settings)
    try:
        try:
            store = ConnectionStore.from_settings(settings, redis)
            chosen: dict[str, Connection] = {}
            if everything:
                for info in await store.connections():
                    found = await store.get(info.pcid, tenant=None)
                    if found is not None:
                        chosen.setdefault(info.pcid, found)
                if not chosen:
                    fail("no connections stored (add one with `calhooks connections add`)")
            for ref in refs:
                found = await store.find(ref)
                if found is None:
                    fail(
                        f"unknown connection {ref!r}: give a name of the default tenant or a"
                        " PCID (list them with `calhooks connections list`)"
                    )
                chosen.setdefault(found.info.pcid, found)
        except ConnectionStoreError as exc:
            fail(str(exc))
        except (RedisError, OSError) as exc:
            fail(f"cannot reach Redis: {exc}")
        outcomes = []
        async with CalcomClient.from_settings(settings) as cal:
            for pcid, found in chosen.items():
                info = found.info
                if info.org_id is None:
                    outcomes.append(
                        _Outcome(
                            pcid,
                            info.name,
                            error="the connection has no org id: add it again with"
                            " `calhooks connections add --org-id`",
                        )
                    )
                    continue
                client = cal.with_credentials(
                    found.credentials, base_url=info.base_url or cal.base_url, org_id=info.org_id
                )
                try:
                    report = await _pass(
                        settings,
                        redis,
                        client,
                        org_id=info.org_id,
                        dry_run=dry_run,
                        budget=budget,
                        connection=pcid,
                        name=info.name,
                    )
                except periodic.Busy:
                    error = "another reconciliation pass is running (a worker's)"
                    outcomes.append(_Outcome(pcid, info.name, error=error))
                except ToolError as exc:
                    outcomes.append(_Outcome(pcid, info.name, error=str(exc)))
                except (RedisError, OSError) as exc:
                    fail(f"cannot reach Redis: {exc}")
                else:
                    outcomes.append(_Outcome(pcid, info.name, report))
        return outcomes
    finally:
        await redis.aclose()
