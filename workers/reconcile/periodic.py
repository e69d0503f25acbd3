"""Reconciliation inside the workers: each period, one pass per organization, one worker at
a time.

The organizations (``targets``): the environment's (``CALHOOKS_ORG_ID``, if set) and every
connection of the connection store (``service.connections``), each with the client
``workers.clients.Organizations`` gives it - its own key, org id, base URL and its key's
shared rate limit. A connection that cannot be used (removed meanwhile, no org id, a key that
cannot be decrypted) is skipped with a logged reason (``reconcile.skipped``); the others go on.

Every worker runs ``every_period``. Each check it walks the organizations, starting where its
last walk stopped, and runs at most ``concurrency`` passes at once (``CONCURRENT_PASSES``); a
walk the limit stopped goes on as soon as a pass ends. With hundreds of connections their
passes spread over the checks, the workers and, beyond what they get through, periods. A
pass needs two keys of its organization (``records.key_prefix``):

* ``due`` - ``SET NX PX <period>``: the first worker to set it owns this period's pass, the
  others find it set and wait for the next period;
* ``lock`` - ``SET NX PX <lock ttl>`` with the holder's token and name, deleted by the holder
  when the pass ends (a dead holder's lock lapses after ``lock_ttl``): no two passes of one
  organization ever overlap, even a pass longer than a period, or ``calhooks reconcile`` run
  by hand meanwhile.

A pass asked for now (``records.request_run``, the console's "Run a pass now") is taken by
the first worker to check (``GETDEL``), which runs it at once and starts a new period.

``budget`` turns the share of the rate limit into list calls per pass: ``per_minute x share
x period / 60`` (at least 1; no bound when the rate limit is off): 60 calls per 5-minute
pass at the defaults (120 a minute, 10 %). The budget is per API key (Cal.com limits per
key): organizations whose clients share a key (one rate-limit bucket) split it
(``share_budgets``), so each key spends at most its share whatever number of organizations
use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.core.settings import Settings
from calhooks.workers.clients import Organizations
from calhooks.workers.reconcile import metrics, records
from calhooks.workers.reconcile.reconciler import Reconciler, RunReport

logger = structlog.get_logger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: Longest a pass may hold the lock when its holder dies without releasing it.
MIN_LOCK_TTL = 600.0
#: Passes one worker runs at once (each of another organization).
CONCURRENT_PASSES = 4


def budget(per_minute: int, share: float, period: float) -> int | None:
    """List calls one pass may spend (``None``: the rate limit is off)."""
    if per_minute <= 0:
        return None
    return max(1, math.floor(per_minute * share * period / 60.0))


@dataclass(frozen=True)
class Target:
    """One organization to reconcile: its records' key (``records.Org``), its client, its
    org id, its name (a connection's), its key's rate-limit bucket, or why it cannot be used."""

    org: records.Org
    client: CalcomClient | None
    org_id: int | None
    name: str | None = None
    bucket: str | None = None
    problem: str | None = None

    @property
    def connection(self) -> str | None:
        return self.org if isinstance(self.org, str) else None


async def targets(organizations: Organizations, env_org_id: int | None) -> list[Target]:
    """The environment's organization (if configured), then every connection by PCID."""
    found = []
    if env_org_id is not None:
        env = organizations.environment
        found.append(Target(env_org_id, env.client, env_org_id, bucket=env.bucket))
    if organizations.store is None:
        return found
    for pcid in sorted(await organizations.store.pcids()):
        scope = await organizations.scope(pcid)
        origin = scope.origin
        name = origin.name if origin is not None else None
        if scope.problem is not None or origin is None or origin.org_id is None:
            problem = scope.problem or f"connection {pcid} has no org id"
            found.append(Target(pcid, None, None, name, problem=problem))
            continue
        found.append(Target(pcid, scope.client, origin.org_id, name, bucket=scope.bucket))
    return found


def share_budgets(found: Sequence[Target], per_key: int | None) -> dict[records.Org, int | None]:
    """Each usable organization's budget: its key's budget split between the organizations
    using that key (at least 1 call each)."""
    users: dict[str | None, int] = {}
    for target in found:
        if target.problem is None:
            users[target.bucket] = users.get(target.bucket, 0) + 1
    return {
        target.org: None if per_key is None else max(1, per_key // users[target.bucket])
        for target in found
        if target.problem is None
    }


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
    lock = records.lock_key(reconciler.org)
    holder = holder or records.this_process()
    token = records.lock_value(holder)
    if not await redis.set(lock, token, nx=True, px=int(lock_ttl * 1000)):
        raise Busy("another reconciliation pass is running")
    try:
        return await reconciler.run(dry_run=dry_run, holder=holder)
    finally:
        await redis.eval(_RELEASE, 1, lock, token)  # type: ignore[misc]


async def claim_period(
    redis: aioredis.Redis, org: records.Org, period: float, *, force: bool = False
) -> bool:
    """Whether this worker owns the current period's pass of ``org`` (see the module
    docstring); ``force`` starts a new period whether or not the current one was claimed."""
    due = records.due_key(org)
    value = records.this_process()
    return bool(await redis.set(due, value, nx=not force, px=int(period * 1000)))


#: What a pass of one organization needs: its target and its budget.
Make = Callable[[Target, int | None], Reconciler]


async def every_period(
    redis: aioredis.Redis,
    find: Callable[[], Awaitable[list[Target]]],
    make: Make,
    *,
    period: float,
    per_key: int | None,
    check_every: float | None = None,
    holder: str | None = None,
    concurrency: int = CONCURRENT_PASSES,
) -> None:
    """Each check, walk the organizations ``find`` lists and run a pass for each whose
    period this worker claims, or that was asked for now - at most ``concurrency`` at once
    - until cancelled."""
    check = check_every if check_every is not None else min(15.0, period / 4)
    running: dict[records.Org, asyncio.Task[None]] = {}
    #: Set when a pass ends: a walk stopped by the limit goes on at once.
    ended = asyncio.Event()
    offset = 0
    try:
        while True:
            _stop_if_cancelled()
            full = False
            try:
                found = await find()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next check tries again
                metrics.PASSES.labels("failed").inc()
                logger.warning("reconcile.failed", error=type(exc).__name__, detail=str(exc)[:200])
                found = []
            budgets = share_budgets(found, per_key)
            offset = offset % len(found) if found else 0
            for target in [*found[offset:], *found[:offset]]:
                _stop_if_cancelled()
                if len(running) >= concurrency:
                    full = True
                    break
                offset += 1
                if target.org in running:
                    continue
                try:
                    requested = await records.take_run_request(redis, target.org)
                    if requested is not None:
                        logger.info("reconcile.run_requested", org=target.org, by=requested)
                    claimed = await claim_period(
                        redis, target.org, period, force=requested is not None
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: the next check tries again
                    logger.warning("reconcile.failed", error=type(exc).__name__)
                    break
                if not claimed:
                    continue
                task = asyncio.create_task(
                    _one(target, make, budgets.get(target.org), period=period, holder=holder),
                    name=f"calhooks-reconcile-{target.org}",
                )
                running[target.org] = task
                task.add_done_callback(_forget(running, target.org, ended))
            pause = check * (0.5 + random.random())  # noqa: S311 (jitter)
            ended.clear()
            if full:  # organizations wait for a free slot: go on as soon as a pass ends
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), pause)
            else:
                await asyncio.sleep(pause)
    finally:
        for task in list(running.values()):
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


def _stop_if_cancelled() -> None:
    """Stop the loop if its task was asked to stop, even when an await swallowed the
    ``CancelledError`` (``asyncio.wait_for`` does in Python 3.11 when its waiter finished
    at the same moment): a worker's shutdown must always end it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _forget(
    running: dict[records.Org, asyncio.Task[None]], org: records.Org, ended: asyncio.Event
) -> Callable[[asyncio.Task[None]], None]:
    """A done callback: ``org``'s pass no longer runs."""

    def done(_: asyncio.Task[None]) -> None:
        running.pop(org, None)
        ended.set()

    return done


async def _one(
    target: Target, make: Make, calls: int | None, *, period: float, holder: str | None
) -> None:
    """One organization's pass for the period this worker claimed."""
    if target.problem is not None:
        metrics.PASSES.labels("skipped").inc()
        logger.warning(
            "reconcile.skipped", org=target.org, connection=target.name, reason=target.problem
        )
        return
    try:
        await run_locked(make(target, calls), lock_ttl=max(MIN_LOCK_TTL, 2 * period), holder=holder)
    except Busy:
        metrics.PASSES.labels("busy").inc()
        logger.info("reconcile.busy", org=target.org)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # Redis or Cal.com away: the next period tries again
        metrics.PASSES.labels("failed").inc()
        logger.warning(
            "reconcile.failed",
            org=target.org,
            connection=target.name,
            error=type(exc).__name__,
            detail=str(exc)[:200],
        )


def reconciler_for(
    settings: Settings, redis: aioredis.Redis, target: Target, calls: int | None
) -> Reconciler:
    """The reconciler of one usable target, with ``calls`` as its budget."""
    assert target.client is not None
    assert target.org_id is not None
    return Reconciler(
        redis,
        target.client,
        org_id=target.org_id,
        queue_name=settings.queue_name,
        dedupe_window=settings.dedupe_window,
        budget=calls,
        grace=settings.reconcile_grace,
        deployment=settings.webhook_deployment,
        connection=target.connection,
        name=target.name,
    )


def start(
    settings: Settings,
    redis: aioredis.Redis,
    organizations: Organizations,
    *,
    holder: str | None = None,
) -> asyncio.Task[None]:
    """The worker's periodic reconciliation task (``CALHOOKS_RECONCILE_*``) for every
    organization ``organizations`` serves; its passes hold the locks in ``holder``'s name
    (the worker's)."""

    async def find() -> list[Target]:
        return await targets(organizations, settings.org_id)

    def make(target: Target, calls: int | None) -> Reconciler:
        return reconciler_for(settings, redis, target, calls)

    return asyncio.create_task(
        every_period(
            redis,
            find,
            make,
            period=settings.reconcile_period,
            per_key=budget(
                settings.worker_rate_limit_per_minute,
                settings.reconcile_rate_share,
                settings.reconcile_period,
            ),
            holder=holder,
        ),
        name="calhooks-reconcile",
    )
