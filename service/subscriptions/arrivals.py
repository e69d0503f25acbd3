"""Connections added while the web process runs: their webhook, applied once across replicas.

With ``CALHOOKS_WEBHOOKS_AUTO_APPLY`` the start-up apply (``startup.auto_apply_all``) makes a
webhook for every connection stored then. ``Arrivals`` covers the connections stored since:
it notes the PCIDs stored when the web process starts (``seed``, before the start-up apply
lists them), then every ``CALHOOKS_WEBHOOK_SECRETS_REFRESH`` seconds - the period in which
the intake starts serving a new connection's URL - lists the PCIDs again (one ``HKEYS``) and
looks at each one it has not seen before:

* a connection whose store holds a ``last_apply`` record has been applied (by another
  replica, or by ``calhooks webhooks apply --connection``): nothing to do;
* otherwise the replica whose ``SET <store>:auto_apply <replica> NX PX`` succeeds applies it
  (``startup.auto_apply``: retries, never pruning, under the webhooks lock, stopping if the
  connection is removed meanwhile) and the others leave it - they find its ``last_apply`` on a
  later pass. The claim is deleted once the apply succeeded (``last_apply`` is written before,
  so no replica ever sees neither). A failed apply (Cal.com down for longer than the
  retries, a revoked key, no org id) keeps its claim until it expires (``CLAIM_TTL``), so some
  replica tries again then - not on every pass - and a replica that died while applying
  leaves the work to another.

A pass costs one ``HKEYS`` and one ``EXISTS`` (pipelined) per connection not yet seen
applied; connections known at start-up are left to the start-up apply (and to re-apply
requests, ``startup.watch_reapply``). Applies run in the background,
``AUTO_APPLY_CONCURRENCY`` at a time, so a slow one never holds back the next pass. A Redis
failure is logged and the pass is tried again at the next period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
import structlog

from calhooks.service.connections.store import ConnectionStore, ConnectionStoreError
from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions.errors import SubscriptionError
from calhooks.service.subscriptions.secret_store import (
    WebhookSecretStore,
    store_name,
    webhook_box,
)
from calhooks.service.subscriptions.targets import Target

if TYPE_CHECKING:
    from calhooks.service.subscriptions.apply import ApplyResult

logger = structlog.get_logger(__name__)

#: How long a replica's claim on a new connection's first apply holds (longer than an
#: ``auto_apply`` with all its retries); a failed apply is tried again once it expired.
CLAIM_TTL = 900.0

#: Applies one connection's webhook (``startup.auto_apply``); ``None``: not applied, logged.
ApplyOne = Callable[[Settings, aioredis.Redis, Target], Awaitable["ApplyResult | None"]]


class Arrivals:
    """One replica's watch over new connections (module docstring); ``SecretStoreError``
    when ``CALHOOKS_ENCRYPTION_KEY`` is unusable."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        *,
        replica: str,
        apply: ApplyOne,
        concurrency: int,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.replica = replica
        self._box = webhook_box(settings)
        self.connections = ConnectionStore(redis, self._box)
        self._apply = apply
        self._gate = asyncio.Semaphore(concurrency)
        #: PCIDs left alone: known at start-up, or seen applied.
        self.known: set[str] = set()
        #: PCID -> the background apply this replica claimed.
        self.in_flight: dict[str, asyncio.Task[None]] = {}

    def store(self, pcid: str) -> WebhookSecretStore:
        deployment = store_name(self.settings.webhook_deployment, pcid)
        return WebhookSecretStore(self.redis, self._box, deployment=deployment)

    async def seed(self) -> None:
        """Note the connections stored now: the start-up apply takes care of them. Never
        raises (a Redis failure leaves the set empty: passes then skip those applied)."""
        try:
            self.known = set(await self.connections.pcids())
        except (aioredis.RedisError, OSError) as exc:
            logger.warning("webhooks.new_connections_check_failed", reason=str(exc))

    async def check(self) -> list[str]:
        """One pass: start applying each new connection this replica claims; their PCIDs."""
        pcids = set(await self.connections.pcids())
        self.known &= pcids
        pending = sorted(pcids - self.known - set(self.in_flight))
        if not pending:
            return []
        stores = [self.store(pcid) for pcid in pending]
        async with self.redis.pipeline(transaction=False) as pipe:
            for store in stores:
                pipe.exists(store.last_apply_key)
            applied = await pipe.execute()
        claimed = []
        for pcid, store, done in zip(pending, stores, applied, strict=True):
            if done:
                self.known.add(pcid)
                continue
            ttl = int(CLAIM_TTL * 1000)
            if await self.redis.set(store.claim_key, self.replica, nx=True, px=ttl):
                claimed.append(pcid)
                self.in_flight[pcid] = asyncio.create_task(self._apply_new(pcid, store))
        return claimed

    async def _apply_new(self, pcid: str, store: WebhookSecretStore) -> None:
        log = logger.bind(pcid=pcid, deployment=self.settings.webhook_deployment)
        try:
            async with self._gate:
                connection = await self.connections.get(pcid, tenant=None)
                if connection is None:
                    return  # removed since the pass listed it
                log.info("webhooks.new_connection", connection=connection.info.name)
                result = await self._apply(self.settings, self.redis, Target(connection))
                if result is not None:
                    self.known.add(pcid)
                    await self.redis.delete(store.claim_key)
        except (ConnectionStoreError, SubscriptionError, aioredis.RedisError, OSError) as exc:
            log.warning("webhooks.new_connection_failed", reason=str(exc))
        finally:
            self.in_flight.pop(pcid, None)

    async def watch(self, every: float) -> None:
        """A pass every ``every`` seconds until cancelled (then the applies in flight are
        cancelled too); never raises."""
        try:
            while True:
                await asyncio.sleep(every)
                try:
                    await self.check()
                except (ConnectionStoreError, aioredis.RedisError, OSError) as exc:
                    logger.warning("webhooks.new_connections_check_failed", reason=str(exc))
        finally:
            running = list(self.in_flight.values())
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
