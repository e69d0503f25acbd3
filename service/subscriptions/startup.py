"""What the intake process (``calhooks serve``) takes from webhook subscriptions.

``intake_extension(settings)`` gives the intake app

* the stored-secrets source, so deliveries signed with the secrets ``calhooks webhooks``
  keeps in Redis verify, next to ``CALHOOKS_WEBHOOK_SECRETS``/``_FILE`` (only when
  ``CALHOOKS_ENCRYPTION_KEY`` is set: without it those secrets cannot be read);
* each connection's secrets, for the intake's per-connection URLs
  (``calhooks.service.intake.connection_secrets``): the connections are the PCIDs of the
  connection store, each connection's secrets its own store ``<deployment>.<pcid>``, read by
  a ``StoredSecretsSource`` that acknowledges under the same replica name as the shared one;
* a lifespan that, with ``CALHOOKS_WEBHOOKS_AUTO_APPLY``, applies the webhook plan in the
  background once the app has started - for the environment's organization (when it has
  credentials) and for every connection, ``AUTO_APPLY_CONCURRENCY`` at a time, each in its
  own organization with its own credentials (``targets``); a failing one is retried on its
  own and never holds back the others - never pruning, never delaying start-up or failing
  it, and only with ``CALHOOKS_RULES_FILE`` set (a web pod without the workers' rules would
  otherwise unsubscribe the triggers they need). Every replica does it; the webhooks lock
  makes one of them change things and the others find nothing to do. With auto-apply the
  lifespan also checks, every ``REAPPLY_CHECK_EVERY`` seconds, for the re-apply request a
  worker's reconciliation pass leaves when someone changed this deployment's own webhook
  (``service.events.reapply_key``); the replica that takes it (``DEL`` answers 1 to one
  replica) applies the plan again;
* with auto-apply, the webhook of each connection stored while the app runs, within one
  ``CALHOOKS_WEBHOOK_SECRETS_REFRESH`` and by one replica only (``arrivals``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import structlog

from calhooks.service.core.redisconn import create_redis
from calhooks.service.core.settings import Settings
from calhooks.service.events import reapply_key
from calhooks.service.intake.connection_secrets import ConnectionSecrets
from calhooks.service.intake.secrets import SecretSource
from calhooks.service.subscriptions.secret_source import (
    StoredSecretsSource,
    replica_name,
    stored_secrets_source,
)
from calhooks.service.subscriptions.secret_store import WebhookSecretStore, store_name
from calhooks.service.subscriptions.targets import ENVIRONMENT, Target

if TYPE_CHECKING:
    from calhooks.service.subscriptions.apply import ApplyResult

logger = structlog.get_logger(__name__)

#: Waits between start-up apply attempts after a failure Cal.com or Redis may recover from.
AUTO_APPLY_RETRY_DELAYS = (10.0, 60.0, 300.0)
#: A replica waits this long for another that holds the webhooks lock.
AUTO_APPLY_LOCK_WAIT = 120.0
#: Seconds between checks for a re-apply request left by reconciliation.
REAPPLY_CHECK_EVERY = 15.0
#: Organizations whose webhooks are applied at once at start-up.
AUTO_APPLY_CONCURRENCY = 4


async def auto_apply(
    settings: Settings,
    redis: aioredis.Redis,
    *,
    retry_delays: Sequence[float] = AUTO_APPLY_RETRY_DELAYS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    target: Target = ENVIRONMENT,
) -> ApplyResult | None:
    """Apply the webhook plan (no prune) of one organization (the environment's unless told
    otherwise), retrying passing failures; never raises."""
    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.calcom.errors import ToolError
    from calhooks.service.subscriptions.apply import apply_webhooks
    from calhooks.service.subscriptions.errors import SubscriptionError
    from calhooks.service.subscriptions.report import done_text
    from calhooks.service.subscriptions.targets import TargetGoneError

    log = logger.bind(deployment=settings.webhook_deployment)
    if target.connection is not None:
        log = log.bind(connection=target.name, pcid=target.pcid)
    if settings.rules_file is None:
        # Without the workers' rules the webhook would lose the triggers they need.
        log.error(
            "webhooks.auto_apply_impossible",
            reason="CALHOOKS_RULES_FILE is not set: give the web pods the workers' rules file",
        )
        return None
    try:
        target.check()
        store = target.store(settings, redis)
        desired_for = target.desired(settings, target.rule_triggers(settings))
    except SubscriptionError as exc:
        log.error("webhooks.auto_apply_impossible", reason=str(exc))
        return None
    for attempt, delay in enumerate([0.0, *retry_delays]):
        if delay:
            await sleep(delay)
        try:
            async with CalcomClient.from_settings(settings) as cal:
                result = await apply_webhooks(
                    target.client(cal),
                    store,
                    desired_for,
                    refresh_interval=settings.webhook_secrets_refresh,
                    lock_wait=AUTO_APPLY_LOCK_WAIT,
                    org_id=target.org_id,
                    guard=target.guard(store),
                )
        except TargetGoneError as exc:
            log.info("webhooks.auto_apply_skipped", reason=str(exc))
            return None
        except (SubscriptionError, ToolError, aioredis.RedisError, OSError) as exc:
            log.warning("webhooks.auto_apply_failed", attempt=attempt + 1, reason=str(exc))
            continue
        done = [done_text(d.action, d.webhook_id, d.note) for d in result.done]
        if result.secret_created:
            done.insert(0, f"generated webhook secret {result.secret.id}")
        log.info(
            "webhooks.auto_applied",
            url=result.plan.desired.subscriber_url,
            triggers=list(result.plan.desired.triggers),
            changes=done or ["none: the webhook is in sync"],
            stale_kept=[s.webhook.id for s in result.plan.stale_kept],
        )
        return result
    log.error("webhooks.auto_apply_gave_up", attempts=len(retry_delays) + 1)
    return None


async def auto_apply_all(
    settings: Settings,
    redis: aioredis.Redis,
    *,
    retry_delays: Sequence[float] = AUTO_APPLY_RETRY_DELAYS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[ApplyResult | None]:
    """``auto_apply`` for the environment's organization (when it has credentials - or when
    there is no connection at all, as before connections existed) and every connection;
    never raises. Results in that order (``None``: not applied, logged)."""
    from calhooks.service.subscriptions.errors import SubscriptionError
    from calhooks.service.subscriptions.targets import connection_targets, environment_configured

    targets: list[Target] = []
    try:
        targets = await connection_targets(settings, redis, everything=True)
    except (SubscriptionError, aioredis.RedisError, OSError) as exc:
        logger.error("webhooks.auto_apply_no_connections", reason=str(exc))
    if environment_configured(settings) or not targets:
        targets.insert(0, ENVIRONMENT)
    gate = asyncio.Semaphore(AUTO_APPLY_CONCURRENCY)

    async def one(target: Target) -> ApplyResult | None:
        async with gate:
            return await auto_apply(
                settings, redis, retry_delays=retry_delays, sleep=sleep, target=target
            )

    return list(await asyncio.gather(*(one(target) for target in targets)))


async def watch_reapply(
    settings: Settings,
    redis: aioredis.Redis,
    *,
    every: float = REAPPLY_CHECK_EVERY,
    apply: Callable[[Settings, aioredis.Redis], Awaitable[object]] = auto_apply_all,
) -> None:
    """Re-apply the webhook plans each time a reconciliation pass asks for it; runs until
    cancelled, never raises (a Redis failure is logged and checked again later)."""
    key = reapply_key(settings.webhook_deployment)
    while True:
        await asyncio.sleep(every)
        try:
            requested = await redis.getdel(key)
        except (aioredis.RedisError, OSError) as exc:
            logger.warning("webhooks.reapply_check_failed", reason=str(exc))
            continue
        if requested is None:
            continue
        event = requested.decode() if isinstance(requested, bytes) else str(requested)
        logger.info("webhooks.reapply_requested", event_id=event)
        await apply(settings, redis)


async def auto_apply_and_watch(
    settings: Settings, redis: aioredis.Redis, *, replica: str | None = None
) -> None:
    """The start-up apply of every organization, and from then on the first apply of each
    connection stored later (``arrivals``); runs until cancelled, never raises."""
    from calhooks.service.subscriptions.arrivals import Arrivals
    from calhooks.service.subscriptions.errors import SubscriptionError

    async def apply_one(
        settings: Settings, redis: aioredis.Redis, target: Target
    ) -> ApplyResult | None:
        return await auto_apply(settings, redis, target=target)

    try:
        arrivals = Arrivals(
            settings,
            redis,
            replica=replica or replica_name(),
            apply=apply_one,
            concurrency=AUTO_APPLY_CONCURRENCY,
        )
    except SubscriptionError as exc:
        logger.error("webhooks.auto_apply_impossible", reason=str(exc))
        return
    await arrivals.seed()  # before the start-up apply lists the connections it applies
    async with asyncio.TaskGroup() as group:
        group.create_task(auto_apply_all(settings, redis))
        group.create_task(arrivals.watch(settings.webhook_secrets_refresh))


@dataclass
class IntakeExtension:
    """Secret sources and a lifespan for the intake app."""

    sources: list[StoredSecretsSource] = field(default_factory=list)
    redis: aioredis.Redis | None = None
    settings: Settings | None = None
    connections: ConnectionSecrets | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[Any]] = []
        settings, redis = self.settings, self.redis
        if settings is not None and redis is not None and settings.webhooks_auto_apply:
            replica = self.sources[0].replica if self.sources else None
            tasks.append(
                asyncio.create_task(auto_apply_and_watch(settings, redis, replica=replica))
            )
            tasks.append(asyncio.create_task(watch_reapply(settings, redis)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.redis is not None:
                await self.redis.aclose()


def intake_extension(settings: Settings, *, redis_url: str | None = None) -> IntakeExtension:
    """The stored-secrets source and auto-apply lifespan for an intake with ``settings``."""
    if settings.encryption_key is None:
        if settings.webhooks_auto_apply:
            logger.error(
                "webhooks.auto_apply_impossible",
                reason="CALHOOKS_ENCRYPTION_KEY is not set (make one with: calhooks keygen)",
            )
        return IntakeExtension()
    redis = create_redis(settings, url=redis_url)
    source = stored_secrets_source(settings, redis)
    if source is None:
        return IntakeExtension([], redis, settings)
    return IntakeExtension([source], redis, settings, connection_secrets(settings, source))


def connection_secrets(settings: Settings, shared: StoredSecretsSource) -> ConnectionSecrets:
    """Each connection's secrets for the intake (see the module docstring); they share the
    shared source's Redis client, encryption and replica name."""
    from calhooks.service.connections.store import ConnectionStore

    store = shared.store
    connections = ConnectionStore(store.redis, store.box)

    def sources_for(pcid: str) -> list[SecretSource]:
        own = WebhookSecretStore(
            store.redis, store.box, deployment=store_name(settings.webhook_deployment, pcid)
        )
        return [StoredSecretsSource(own, replica=shared.replica)]

    return ConnectionSecrets(
        connections.pcids,
        sources_for,
        min_refresh_interval=min(1.0, settings.webhook_secrets_refresh),
    )
