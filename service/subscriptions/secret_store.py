"""Webhook signing secrets calhooks generates, kept in Redis, encrypted, shared by every replica.

A secret is 256 random bits from ``secrets`` (``whsec_`` + 43 URL-safe characters). It is
stored sealed with ``SecretBox`` (Fernet, ``CALHOOKS_ENCRYPTION_KEY``) together with its id, so
a ciphertext moved to another id is refused. Redis never holds a secret in clear.

Keys, per deployment (``CALHOOKS_WEBHOOK_DEPLOYMENT``), prefix ``calhooks:webhooks:<name>:``.
The environment's organization uses the deployment's name; each connection has a store of its
own, named ``<deployment>.<pcid>`` (``store_name``), so its secrets, lock, replicas record and
last apply never mix with another organization's:

* ``secrets`` - hash, id -> JSON ``{"id", "created_at", "sealed"}``; records never change;
* ``expiry`` - hash, id -> Unix time after which the secret is no longer accepted (absent:
  no expiry);
* ``current`` - the id of the secret Cal.com's webhook should sign with;
* ``version`` - a counter bumped in the same transaction as every change;
* ``replicas`` - hash, intake replica -> JSON ``{"version", "at"}``: the version each replica
  last loaded, and when (see ``secret_source``). ``rotate`` waits on it.
* ``last_apply`` - JSON of the last ``apply``: when, whether it generated a secret (its id),
  and each action done (``create``/``update``/``delete``, webhook id, note); no secret value.
  A connection's store without it has never been applied: the web process' watcher of new
  connections (``arrivals``) applies those;
* ``auto_apply`` - the replica that claimed a new connection's first apply (``SET NX`` with
  an expiry, ``arrivals``);
* ``lock`` - the webhooks lock (``lock``).

``purge`` deletes every key of a store (a removed connection's, ``removal``).

Intake replicas read ``version`` (one ``GET``) on each refresh and reload the rest only when
it moved. Expiry is evaluated when a delivery is verified: nothing has to run for an old
secret to stop working.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis

from calhooks.service.core.logs import register_secret
from calhooks.service.core.secretbox import SecretBox, SecretBoxError
from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions.errors import SecretStoreError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix that makes leaked secrets recognisable
SECRET_BYTES = 32

Clock = Callable[[], float]


def generate_secret() -> str:
    """A new webhook signing secret: 256 bits from ``secrets``, URL-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def new_secret_id(now: float) -> str:
    """An id that sorts by creation time and says nothing about the secret."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """One webhook secret; ``value`` never appears in a ``repr``."""

    id: str
    value: str = field(repr=False)
    created_at: float
    expires_at: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class SecretSnapshot:
    """The store as of one ``version``: every secret kept, and which one is current."""

    version: int
    secrets: tuple[StoredSecret, ...]
    current_id: str | None

    @property
    def current(self) -> StoredSecret | None:
        return next((s for s in self.secrets if s.id == self.current_id), None)

    def valid(self, now: float) -> list[StoredSecret]:
        """Secrets a delivery may be signed with at ``now``: the current one first."""
        found = [s for s in self.secrets if s.valid_at(now)]
        return sorted(found, key=lambda s: (s.id != self.current_id, -s.created_at))


@dataclass(frozen=True, slots=True)
class ReplicaState:
    version: int
    at: float


def store_name(deployment: str, connection: str | None = None) -> str:
    """The store of the environment's organization (``deployment``) or of a connection's
    (``<deployment>.<pcid>``)."""
    return deployment if connection is None else f"{deployment}.{connection}"


def keys_prefix(deployment: str) -> str:
    return f"calhooks:webhooks:{deployment}:"


def webhook_box(settings: Settings) -> SecretBox:
    """The ``SecretBox`` sealing webhook secrets (``CALHOOKS_ENCRYPTION_KEY``)."""
    if settings.encryption_key is None:
        raise SecretStoreError(
            "CALHOOKS_ENCRYPTION_KEY is required to keep webhook secrets in Redis"
            " (make one with: calhooks keygen)"
        )
    try:
        return SecretBox(settings.encryption_key.get_secret_value())
    except SecretBoxError as exc:
        raise SecretStoreError(str(exc)) from exc


class WebhookSecretStore:
    """Reads and changes one deployment's webhook secrets in Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        box: SecretBox,
        *,
        deployment: str,
        clock: Clock = time.time,
    ) -> None:
        self.redis = redis
        self.box = box
        self.deployment = deployment
        self.clock = clock
        prefix = keys_prefix(deployment)
        self.prefix = prefix
        self.secrets_key = prefix + "secrets"
        self.expiry_key = prefix + "expiry"
        self.current_key = prefix + "current"
        self.version_key = prefix + "version"
        self.lock_key = prefix + "lock"
        self.replicas_key = prefix + "replicas"
        self.last_apply_key = prefix + "last_apply"
        self.claim_key = prefix + "auto_apply"
        self._opened: dict[str, str] = {}  # id -> value; records are immutable

    async def record_apply(self, record: Mapping[str, Any]) -> None:
        """Keep what the last ``apply`` did (the console shows it); no secret value in it."""
        await self.redis.set(self.last_apply_key, json.dumps(record, default=str))

    async def applied(self) -> bool:
        """Whether an ``apply`` ever completed for this store (one ``EXISTS``)."""
        return bool(await self.redis.exists(self.last_apply_key))

    async def last_apply(self) -> dict[str, Any] | None:
        raw = await self.redis.get(self.last_apply_key)
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    @classmethod
    def from_settings(
        cls, settings: Settings, redis: aioredis.Redis, *, connection: str | None = None
    ) -> WebhookSecretStore:
        """The store of the environment's organization, or of the connection ``connection``
        (a PCID)."""
        deployment = store_name(settings.webhook_deployment, connection)
        return cls(redis, webhook_box(settings), deployment=deployment)

    # Reading.

    async def version(self) -> int:
        raw = await self.redis.get(self.version_key)
        return int(raw or 0)

    async def snapshot(self) -> SecretSnapshot:
        """Every secret with its expiry and the current id, read in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.version_key)
            pipe.hgetall(self.secrets_key)
            pipe.hgetall(self.expiry_key)
            pipe.get(self.current_key)
            version, records, expiry, current = await pipe.execute()
        kept = [
            self._open(_text(raw), _parse_expiry(expiry.get(key)))
            for key, raw in cast(Mapping[bytes, bytes], records).items()
        ]
        return SecretSnapshot(
            version=int(version or 0),
            secrets=tuple(sorted(kept, key=lambda s: s.created_at)),
            current_id=_text(current) if current else None,
        )

    async def current(self) -> StoredSecret | None:
        return (await self.snapshot()).current

    async def valid(self) -> list[StoredSecret]:
        return (await self.snapshot()).valid(self.clock())

    def _open(self, raw: str, expires_at: float | None) -> StoredSecret:
        record = json.loads(raw)
        secret_id = str(record["id"])
        value = self._opened.get(secret_id)
        if value is None:
            try:
                sealed = json.loads(self.box.decrypt(record["sealed"]))
            except SecretBoxError as exc:
                raise SecretStoreError(
                    f"webhook secret {secret_id} cannot be decrypted: wrong"
                    " CALHOOKS_ENCRYPTION_KEY?"
                ) from exc
            if sealed.get("id") != secret_id:
                raise SecretStoreError(f"webhook secret {secret_id} was sealed for another id")
            value = str(sealed["secret"])
            register_secret(value)
            self._opened[secret_id] = value
        return StoredSecret(secret_id, value, float(record["created_at"]), expires_at)

    # Intake replicas report what they loaded.

    async def acknowledge(self, replica: str, version: int) -> None:
        """Record that ``replica`` verifies with the secrets of ``version`` from now on."""
        entry = json.dumps({"version": version, "at": self.clock()})
        await cast(Awaitable[int], self.redis.hset(self.replicas_key, replica, entry))

    async def replicas(self) -> dict[str, ReplicaState]:
        """Every replica that ever acknowledged, with its last version and when it said so."""
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.replicas_key))
        found = {}
        for name, value in raw.items():
            entry = json.loads(value)
            found[_text(name)] = ReplicaState(int(entry["version"]), float(entry["at"]))
        return found

    async def forget_replicas(self, names: Iterable[str]) -> None:
        gone = list(names)
        if gone:
            await cast(Awaitable[int], self.redis.hdel(self.replicas_key, *gone))

    # Changing. Each change bumps ``version`` in the same MULTI/EXEC.

    async def add(self, *, make_current: bool, expires_at: float | None = None) -> StoredSecret:
        """Generate and keep a new secret; accepted by every intake replica at once."""
        now = self.clock()
        secret = StoredSecret(new_secret_id(now), generate_secret(), now, expires_at)
        register_secret(secret.value)
        sealed = self.box.encrypt(json.dumps({"id": secret.id, "secret": secret.value}))
        record = json.dumps({"id": secret.id, "created_at": now, "sealed": sealed})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.secrets_key, secret.id, record)
            if expires_at is not None:
                pipe.hset(self.expiry_key, secret.id, repr(expires_at))
            if make_current:
                pipe.set(self.current_key, secret.id)
            pipe.incr(self.version_key)
            await pipe.execute()
        self._opened[secret.id] = secret.value
        return secret

    async def ensure_current(self) -> tuple[StoredSecret, bool]:
        """The current secret, generated first if there is none; ``(secret, created)``.

        Call it under the webhooks lock: two callers racing could both generate one.
        """
        found = await self.current()
        if found is not None:
            return found, False
        return await self.add(make_current=True), True

    async def promote(self, secret_id: str, *, retire: Mapping[str, float]) -> None:
        """Make ``secret_id`` current (no expiry) and expire the ``retire`` ids at given times."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.current_key, secret_id)
            pipe.hdel(self.expiry_key, secret_id)
            for old_id, at in retire.items():
                pipe.hset(self.expiry_key, old_id, repr(at))
            pipe.incr(self.version_key)
            await pipe.execute()

    async def expire(self, secret_id: str, at: float) -> None:
        """Stop accepting ``secret_id`` from ``at`` on."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.expiry_key, secret_id, repr(at))
            pipe.incr(self.version_key)
            await pipe.execute()

    async def purge_expired(self) -> list[str]:
        """Delete the secrets that can no longer be used (never the current one)."""
        snapshot = await self.snapshot()
        now = self.clock()
        gone = [
            s.id for s in snapshot.secrets if not s.valid_at(now) and s.id != snapshot.current_id
        ]
        if gone:
            await self._delete(gone)
        return gone

    async def purge(self, *, keep_lock: bool = False) -> int:
        """Delete every key of this store (secrets, expiries, replicas, last apply, claim,
        any other under its prefix, and the lock unless ``keep_lock``: its holder releases
        it); how many were deleted."""
        pattern = _glob_escape(self.prefix) + "*"
        lock = self.lock_key.encode()
        names = [
            name
            async for name in self.redis.scan_iter(match=pattern, count=100)
            if not (keep_lock and name == lock)
        ]
        self._opened.clear()
        return int(await self.redis.delete(*names)) if names else 0

    async def _delete(self, ids: Iterable[str]) -> None:
        names = list(ids)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.secrets_key, *names)
            pipe.hdel(self.expiry_key, *names)
            pipe.incr(self.version_key)
            await pipe.execute()
        for name in names:
            self._opened.pop(name, None)


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_expiry(raw: Any) -> float | None:
    return None if raw is None else float(_text(raw))
