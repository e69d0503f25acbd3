"""Reconciliation inside the workers: one pass per period, one worker at a time.

Every worker runs ``every_period``; a pass needs two keys (``calhooks:reconcile:<org>:``):

* ``due`` - ``SET NX PX <period>``: the first worker to set it owns this period's pass, the
  others find it set and wait for the next period;
* ``lock`` - ``SET NX PX <lock ttl>`` with the holder's token, deleted by the holder when the
  pass ends (a dead holder's lock lapses after ``lock_ttl``): no two passes ever overlap, even
  a pass longer than a period, or ``calhooks reconcile`` run by hand meanwhile.

``budget`` turns the share of the rate limit into list calls per pass: ``per_minute x share
x period / 60`` (at least 1; no bound when the rate limit is off): 60 calls per 5-minute
pass at the defaults (120 a minute, 10 %).
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.core.settings import Settings
from calhooks.workers.reconcile import metrics
from calhooks.workers.reconcile.reconciler import Reconciler, RunReport, key_prefix

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
    reconciler: Reconciler, *, lock_ttl: float = MIN_LOCK_TTL, dry_run: bool = False
) -> RunReport:
    """One pass under the lock; ``Busy`` when another pass is running."""
    redis = reconciler.redis
    lock = key_prefix(reconciler.org_id) + "lock"
    token = uuid.uuid4().hex
    if not await redis.set(lock, token, nx=True, px=int(lock_ttl * 1000)):
        raise Busy("another reconciliation pass is running")
    try:
        return await reconciler.run(dry_run=dry_run)
    finally:
        await redis.eval(_RELEASE, 1, lock, token)  # type: ignore[misc]


async def claim_period(redis: aioredis.Redis, org_id: int, period: float) -> bool:
    """Whether this worker owns the current period's pass (see the module docstring)."""
    due = key_prefix(org_id) + "due"
    return bool(await redis.set(due, uuid.uuid4().hex, nx=True, px=int(period * 1000)))


async def every_period(
    make: Callable[[], Reconciler],
    *,
    period: float,
    check_every: float | None = None,
) -> None:
    """Run a pass whenever this worker claims a period, until cancelled."""
    check = check_every if check_every is not None else min(15.0, period / 4)
    while True:
        reconciler = make()
        try:
            if await claim_period(reconciler.redis, reconciler.org_id, period):
                await run_locked(reconciler, lock_ttl=max(MIN_LOCK_TTL, 2 * period))
        except Busy:
            metrics.PASSES.labels("busy").inc()
            logger.info("reconcile.busy", org=reconciler.org_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis or Cal.com away: the next period tries again
            metrics.PASSES.labels("failed").inc()
            logger.warning("reconcile.failed", error=type(exc).__name__, detail=str(exc)[:200])
        await asyncio.sleep(check * (0.5 + random.random()))  # noqa: S311 (jitter)


def start(settings: Settings, redis: aioredis.Redis, client: CalcomClient) -> asyncio.Task[None]:
    """The worker's periodic reconciliation task (``CALHOOKS_RECONCILE_*``)."""
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
        every_period(make, period=settings.reconcile_period), name="calhooks-reconcile"
    )
