"""The secret store as one of the intake's secret sources (``calhooks.service.intake.secrets``).

The intake's ``SecretProvider`` combines sources: ``CALHOOKS_WEBHOOK_SECRETS``,
``CALHOOKS_WEBHOOK_SECRETS_FILE`` (secrets operators manage themselves) and this one, the
secrets ``calhooks webhooks apply``/``rotate`` keep in Redis. Any of them may sign a delivery.

The provider calls ``refresh`` periodically (``CALHOOKS_WEBHOOK_SECRETS_REFRESH``) and when a
signature matches no secret. Each refresh costs one ``GET`` of the store's version; the
secrets are read and decrypted again only when it moved. After every successful refresh the
replica records the version it now verifies with (``WebhookSecretStore.acknowledge``):
``rotate`` switches Cal.com to a new secret only once every live replica has acknowledged
it, so no replica ever sees a delivery signed with a secret it has not loaded.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis
import structlog

from calhooks.service.core.settings import Settings
from calhooks.service.intake.secrets import WebhookSecret
from calhooks.service.subscriptions.errors import SecretStoreError
from calhooks.service.subscriptions.secret_store import StoredSecret, WebhookSecretStore

logger = structlog.get_logger(__name__)


def replica_name() -> str:
    """A name for one intake among the replicas: host (the pod name in Kubernetes), process
    and a random suffix, as one process may run several intakes (``calhooks dev``, tests)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _as_webhook_secret(secret: StoredSecret) -> WebhookSecret:
    expires = None if secret.expires_at is None else datetime.fromtimestamp(secret.expires_at, UTC)
    return WebhookSecret(secret.value, expires)


class StoredSecretsSource:
    """``SecretSource`` over ``WebhookSecretStore``; ``refresh`` never raises."""

    def __init__(self, store: WebhookSecretStore, *, replica: str | None = None) -> None:
        self.store = store
        self.replica = replica or replica_name()
        self.name = f"redis:{store.deployment}"
        self.loaded = False
        self.error: str | None = None
        self._version: int | None = None
        self._secrets: tuple[WebhookSecret, ...] = ()

    def secrets(self) -> Sequence[WebhookSecret]:
        return self._secrets

    async def refresh(self) -> bool:
        try:
            version = await self.store.version()
            changed = False
            if version != self._version or not self.loaded:
                snapshot = await self.store.snapshot()
                loaded = tuple(_as_webhook_secret(s) for s in snapshot.secrets)
                changed = loaded != self._secrets or not self.loaded
                self._secrets, self._version = loaded, snapshot.version
                if changed:
                    logger.info(
                        "secrets.redis_loaded",
                        store=self.store.deployment,
                        version=snapshot.version,
                        count=len(loaded),
                    )
            self.loaded = True
            await self.store.acknowledge(self.replica, self._version or 0)
        except (SecretStoreError, aioredis.RedisError, OSError, ValueError) as exc:
            message = str(exc) or type(exc).__name__
            if message != self.error:
                logger.error("secrets.redis_unusable", store=self.store.deployment, reason=message)
            self.error = message
            return False
        self.error = None
        return changed


def stored_secrets_source(settings: Settings, redis: aioredis.Redis) -> StoredSecretsSource | None:
    """The source for the intake, or ``None`` when no encryption key is configured."""
    try:
        store = WebhookSecretStore.from_settings(settings, redis)
    except SecretStoreError as exc:
        logger.info("secrets.redis_unused", reason=str(exc))
        return None
    return StoredSecretsSource(store)
