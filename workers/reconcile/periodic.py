"""Reconciliation inside the workers: one pass per period, one worker at a time.

Every worker runs ``every_period``; a pass needs two keys (``calhooks:reconcile:<org>:``):

* ``due`` - ``SET NX PX <period>``: the first worker to set it owns this period's pass, the
  others find it set and wait for the next period;
* ``lock`` - ``SET NX PX <lock ttl>`` with the holder's token and name, deleted by the holder
  when the pass ends (a dead holder's lock lapses after ``lock_ttl``): no two passes ever
  overlap, even a pass longer than a period, or ``calhooks reconcile`` run by hand meanwhile.

A pass asked for now (``records.request_run``, the console's "Run a pass now") is taken by
the first worker to check (``GETDEL``), which runs it at once and starts a new period.

``budget`` turns the share of the rate limit into list calls per pass: ``per_minute x share
x period / 60`` (at least 1; no bound when the rate limit is off): 60 calls per 5-minute
pass at the defaults (120 a minute, 10 %).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.core.settings import Settings
from calhooks.workers.reconcile import metrics, records
from calhooks.workers.reconcile.reconciler import Reconciler, RunReport

logger = structlog.get_logger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: Longest a pass may hold the lock when its holder dies without releasing it.
MIN_LOCK_TTL = 600.0


def budget(per_minute: int, share: float, period: float) -> int | None:
    """List calls one pass may spend (``None``: the rate limit is off)."""
    if per_minute <= 0:
        return None
    return max(1, math.floor(per_minute * share * period / 60.0))


class Busy(RuntimeError):
    """Another pass holds the reconciliation lock."""


async def run_locked(
    reconciler: Reconciler,
    *,
    lock_ttl: float = MIN_LOCK_TTL,
    dry_run: bool = False,
    holder: str | None = None,
) -> RunReport:
    """One pass under the lock, held in ``holder``'s name (default: this process);
    ``Busy`` when another pass is running."""
    redis = reconciler.redis
    lock = records.lock_key(reconciler.org_id)
    holder = holder or records.this_process()
    token = records.lock_value(holder)
    if not await redis.set(lock, token, nx=True, px=int(lock_ttl * 1000)):
        raise Busy("another reconciliation pass is running")
    try:
        return await reconciler.run(dry_run=dry_run, holder=holder)
    finally:
        await redis.eval(_RELEASE, 1, lock, token)  # type: ignore[misc]


async def claim_period(
    redis: aioredis.Redis, org_id: int, period: float, *, force: bool = False
) -> bool:
    """Whether this worker owns the current period's pass (see the module docstring);
    ``force`` starts a new period whether or not the current one was claimed."""
    due = records.due_key(org_id)
    value = records.this_process()
    return bool(await redis.set(due, value, nx=not force, px=int(period * 1000)))


async def every_period(
    make: Callable[[], Reconciler],
    *,
    period: float,
    check_every: float | None = None,
    holder: str | None = None,
) -> None:
    """Run a pass whenever this worker claims a period, or takes a request for one now,
    until cancelled."""
    check = check_every if check_every is not None else min(15.0, period / 4)
    while True:
        reconciler = make()
        redis, org_id = reconciler.redis, reconciler.org_id
        try:
            requested = await records.take_run_request(redis, org_id)
            if requested is not None:
                logger.info("reconcile.run_requested", org=org_id, by=requested)
            if await claim_period(redis, org_id, period, force=requested is not None):
                await run_locked(reconciler, lock_ttl=max(MIN_LOCK_TTL, 2 * period), holder=holder)
        except Busy:
            metrics.PASSES.labels("busy").inc()
            logger.info("reconcile.busy", org=reconciler.org_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis or Cal.com away: the next period tries again
            metrics.PASSES.labels("failed").inc()
            logger.warning("reconcile.failed", error=type(exc).__name__, detail=str(exc)[:200])
        await asyncio.sleep(check * (0.5 + random.random()))  # noqa: S311 (jitter)


def start(
    settings: Settings, redis: aioredis.Redis, client: CalcomClient, *, holder: str | None = None
) -> asyncio.Task[None]:
    """The worker's periodic reconciliation task (``CALHOOKS_RECONCILE_*``); its passes hold
    the lock in ``holder``'s name (the worker's)."""
    assert settings.org_id is not None
    org_id = settings.org_id

    def make() -> Reconciler:
        return Reconciler(
            redis,
            client,
            org_id=org_id,
            queue_name=settings.queue_name,
            dedupe_window=settings.dedupe_window,
            budget=budget(
                settings.worker_rate_limit_per_minute,
                settings.reconcile_rate_share,
                settings.reconcile_period,
            ),
            grace=settings.reconcile_grace,
            deployment=settings.webhook_deployment,
        )

    return asyncio.create_task(
        every_period(make, period=settings.reconcile_period, holder=holder),
        name="calhooks-reconcile",
    )
