"""One change at a time to a deployment's webhooks, across every replica and CLI run.

``apply`` and ``rotate`` hold a Redis lock (``SET NX PX`` with a random token, released only
by its holder - redis-py's ``Lock``) for the whole read-plan-change sequence, so replicas
starting together apply once and the others then find nothing to do. The lock expires by
itself (``ttl``) if its holder dies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from redis.exceptions import LockError

from calhooks.service.subscriptions.errors import LockBusyError
from calhooks.service.subscriptions.secret_store import WebhookSecretStore

logger = structlog.get_logger(__name__)

LOCK_TTL = 300.0
LOCK_WAIT = 60.0


@asynccontextmanager
async def webhooks_lock(
    store: WebhookSecretStore, *, wait: float = LOCK_WAIT, ttl: float = LOCK_TTL
) -> AsyncIterator[None]:
    """Hold the deployment's webhooks lock for the block; wait up to ``wait`` seconds for it."""
    lock = store.redis.lock(store.lock_key, timeout=ttl, blocking_timeout=wait)
    if not await lock.acquire():
        raise LockBusyError(
            f"another calhooks process is changing the webhooks of deployment"
            f" {store.deployment!r} (lock {store.lock_key}); try again later"
        )
    try:
        yield
    finally:
        try:
            await lock.release()
        except LockError:
            logger.warning("webhooks.lock_expired", key=store.lock_key, ttl=ttl)
