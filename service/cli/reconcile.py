"""``calhooks reconcile``: one reconciliation pass now, or (``--dry-run``) what it would emit.

The pass is the workers' (``calhooks.workers.reconcile``): it lists memberships, users, OOO
entries, webhooks and bookings, diffs them against the snapshot in Redis and queues one
event per difference; the first pass only takes the baseline. It takes the same lock as the
workers' periodic pass, so it never runs alongside one. ``--dry-run`` lists everything,
writes nothing and prints the events a pass would queue now. docs/reconciliation.md.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from calhooks.service.cli.output import configure_cli_logging, fail, print_json

if TYPE_CHECKING:
    from calhooks.workers.reconcile.reconciler import RunReport


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
) -> None:
    """Reconcile now: queue what Cal.com never delivered and org changes it has no webhook for.

    The first pass takes the baseline and queues nothing.
    """
    from calhooks.service.core.settings import get_settings

    settings = get_settings()
    configure_cli_logging()
    if settings.org_id is None:
        fail("CALHOOKS_ORG_ID is not set: the organization to reconcile")
    report = asyncio.run(_run(dry_run=dry_run, budget=budget))
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "calls": report.calls,
                "complete": report.complete,
                "baselined": report.baselined,
                "pending": report.pending,
                "seen": report.seen,
                "queued": report.queued,
                "events": [event.to_dict() for event in report.events],
            }
        )
        return
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


async def _run(*, dry_run: bool, budget: int | None) -> RunReport:
    from redis.exceptions import RedisError

    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.calcom.errors import ToolError
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.core.settings import get_settings
    from calhooks.workers.reconcile import periodic, records
    from calhooks.workers.reconcile.reconciler import Reconciler

    settings = get_settings()
    assert settings.org_id is not None
    if budget is None:
        budget = periodic.budget(
            settings.worker_rate_limit_per_minute,
            settings.reconcile_rate_share,
            settings.reconcile_period,
        )
    redis = create_redis(settings)
    client = CalcomClient.from_settings(settings)
    reconciler = Reconciler(
        redis,
        client,
        org_id=settings.org_id,
        queue_name=settings.queue_name,
        dedupe_window=settings.dedupe_window,
        budget=None if dry_run or not budget else budget,
        grace=settings.reconcile_grace,
        deployment=settings.webhook_deployment,
    )
    try:
        if dry_run:
            return await reconciler.run(dry_run=True)
        return await periodic.run_locked(
            reconciler, holder=f"calhooks reconcile on {records.this_process()}"
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
