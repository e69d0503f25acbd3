"""Connections: Cal.com credentials stored once, then picked by a PCID (MCP calls, the pipeline).

A connection is one Cal.com account (an API key, or a platform client id + secret), an
optional default ``orgId`` and base URL, a name, and the tenant it belongs to. Its PCID is
an opaque random id (128 bits from ``secrets``) that MCP clients pass as the ``PCID``
argument of every ``tools/call``.

Connections live in Redis so that every web replica sees the same set:

* ``calhooks:mcp:connections`` - hash, PCID -> JSON record (``"v": 2``). Name, tenant, auth
  kind, org id, base URL and creation time are plain, for listing without the key; the
  credentials are one Fernet token (``SecretBox``, keyed by ``CALHOOKS_ENCRYPTION_KEY``)
  that also seals the PCID, tenant, auth kind, org id and base URL. A record whose plain
  fields differ from what was sealed (someone with Redis write access pointing a key at a
  host of their choosing, or a ciphertext copied into another record or tenant) is refused
  rather than used.
* Version 1 records sealed the PCID and tenant only. ``get`` still reads them and rewrites
  them in the version 2 form (binding the org id and base URL they have then);
  ``migrate`` (``calhooks connections migrate``) rewrites them all at once.
* ``calhooks:mcp:connection-names`` - hash, ``tenant`` + US + ``name`` -> PCID, keeping
  names unique within a tenant.

Both hashes change together in Lua scripts, so a crash never leaves a name without its
connection. Listing never decrypts anything; only ``get`` (a tool call) and ``find``
(``connections test``) do, and they register the key with the log redactor.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast
from urllib.parse import urlparse

import redis.asyncio as aioredis
import structlog

from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.tenants import DEFAULT_TENANT, TenantNameError, check_tenant_name
from calhooks.service.core.logs import register_secret
from calhooks.service.core.secretbox import SecretBox, SecretBoxError
from calhooks.service.core.settings import Settings

logger = structlog.get_logger(__name__)

RECORDS_KEY = "calhooks:mcp:connections"
VERSION = 2
NAMES_KEY = "calhooks:mcp:connection-names"
_SEPARATOR = "\x1f"
_MAX_NAME = 100

AuthKind = Literal["api_key", "platform_client"]

_ADD = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

_REMOVE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local record = cjson.decode(raw)
local name_key = record['tenant'] .. ARGV[2] .. record['name']
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], name_key) == ARGV[1] then redis.call('HDEL', KEYS[2], name_key) end
return 1
"""


# Replace a record only if it is still the one that was read (a migration racing a removal).
_REWRITE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

#: The plain fields a version 2 seal binds.
_BOUND = ("pcid", "tenant", "auth", "org_id", "base_url")


class ConnectionStoreError(Exception):
    """A connection cannot be stored or read (bad input, name taken, undecryptable, no key)."""


def new_pcid() -> str:
    """A fresh PCID: a random UUID (122 random bits from ``secrets``), opaque to clients."""
    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))


def normalize_base_url(url: str) -> str:
    """``url`` as a Cal.com API base URL: http(s), no trailing slash, no ``/v2`` suffix."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConnectionStoreError(f"base URL must be http(s)://host[:port], got {url!r}")
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise ConnectionStoreError("base URL must not carry credentials, a query or a fragment")
    cleaned = url.strip().rstrip("/")
    if cleaned.endswith("/v2"):
        raise ConnectionStoreError("give the base URL without the /v2 suffix")
    return cleaned


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What may be shown about a connection: everything but its credentials."""

    pcid: str
    name: str
    tenant: str
    auth: AuthKind
    org_id: int | None
    base_url: str | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Connection:
    """A connection with its decrypted credentials, ready to call Cal.com."""

    info: ConnectionInfo
    credentials: Credentials


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        raise ConnectionStoreError(
            f"connection names are 1-{_MAX_NAME} printable characters, got {name!r}"
        )
    return name


def _check_credentials(credentials: Credentials) -> AuthKind:
    if credentials.api_key and (credentials.client_id or credentials.client_secret):
        raise ConnectionStoreError("give an API key or a platform client id + secret, not both")
    if credentials.api_key:
        if not credentials.api_key.strip() or any(c.isspace() for c in credentials.api_key):
            raise ConnectionStoreError("the API key is empty or contains spaces")
        return "api_key"
    if credentials.client_id and credentials.client_secret:
        return "platform_client"
    raise ConnectionStoreError("a connection needs an API key or a platform client id + secret")


def secret_box(settings: Settings) -> SecretBox:
    """The ``SecretBox`` of ``CALHOOKS_ENCRYPTION_KEY``; a clear error when it is unset or bad."""
    if settings.encryption_key is None:
        raise ConnectionStoreError(
            "CALHOOKS_ENCRYPTION_KEY is not set: MCP connections keep their API keys "
            "encrypted and need it (make one with `calhooks keygen`)"
        )
    try:
        return SecretBox(settings.encryption_key.get_secret_value())
    except SecretBoxError as exc:
        raise ConnectionStoreError(str(exc)) from exc


class ConnectionStore:
    """Connections in Redis, credentials encrypted with ``SecretBox``."""

    def __init__(self, redis: aioredis.Redis, box: SecretBox) -> None:
        self._redis = redis
        self._box = box
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)
        self._rewrite = redis.register_script(_REWRITE)

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    @classmethod
    def from_settings(cls, settings: Settings, redis: aioredis.Redis) -> ConnectionStore:
        """A store on ``redis`` keyed by ``CALHOOKS_ENCRYPTION_KEY`` (which must be set)."""
        return cls(redis, secret_box(settings))

    async def add(
        self,
        name: str,
        credentials: Credentials,
        *,
        tenant: str = DEFAULT_TENANT,
        org_id: int | None = None,
        base_url: str | None = None,
    ) -> ConnectionInfo:
        """Store a new connection and return it with its fresh PCID."""
        name = _check_name(name)
        try:
            check_tenant_name(tenant)
        except TenantNameError as exc:
            raise ConnectionStoreError(str(exc)) from None
        auth = _check_credentials(credentials)
        if org_id is not None and org_id < 1:
            raise ConnectionStoreError(f"org id must be a positive integer, got {org_id}")
        info = ConnectionInfo(
            pcid=new_pcid(),
            name=name,
            tenant=tenant,
            auth=auth,
            org_id=org_id,
            base_url=normalize_base_url(base_url) if base_url else None,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        record = self._record(info, credentials)
        added = await self._add(
            keys=[RECORDS_KEY, NAMES_KEY],
            args=[info.pcid, tenant + _SEPARATOR + name, record],
        )
        if added == 0:
            raise ConnectionStoreError(f"tenant {tenant!r} already has a connection named {name!r}")
        if added != 1:  # a PCID collision: 2**-122, but never overwrite a connection
            raise ConnectionStoreError("PCID collision; try again")
        return info

    async def connections(self, tenant: str | None = None) -> list[ConnectionInfo]:
        """Every connection (of ``tenant``, when given), sorted by tenant and name."""
        raw = await cast(Awaitable[dict[bytes, bytes]], self._redis.hgetall(RECORDS_KEY))
        infos = [self._info(json.loads(value)) for value in raw.values()]
        if tenant is not None:
            infos = [info for info in infos if info.tenant == tenant]
        return sorted(infos, key=lambda info: (info.tenant, info.name, info.pcid))

    async def pcids(self) -> list[str]:
        """Every connection's PCID (one ``HKEYS``: nothing parsed, nothing decrypted)."""
        raw = await cast(Awaitable[list[bytes]], self._redis.hkeys(RECORDS_KEY))
        return [pcid.decode() for pcid in raw]

    async def exists(self, pcid: str) -> bool:
        """Whether the connection ``pcid`` is stored (one ``HEXISTS``, nothing decrypted)."""
        return bool(await cast(Awaitable[int], self._redis.hexists(RECORDS_KEY, pcid)))

    async def get(self, pcid: str, *, tenant: str | None) -> Connection | None:
        """The connection ``pcid`` with its credentials; ``None`` if unknown to ``tenant``.

        ``tenant=None`` (stdio, the CLI) may use any tenant's connection.
        """
        raw = await cast(Awaitable[bytes | None], self._redis.hget(RECORDS_KEY, pcid))
        if raw is None:
            return None
        record = json.loads(raw)
        info = self._info(record)
        if tenant is not None and info.tenant != tenant:
            return None
        credentials = self._unseal(info, record)
        if record.get("v", 1) < VERSION:
            await self._upgrade(raw, info, credentials)
        return Connection(info, credentials)

    async def migrate(self) -> int:
        """Rewrite every version 1 record in the sealed-whole form; how many were rewritten."""
        raw = await cast(Awaitable[dict[bytes, bytes]], self._redis.hgetall(RECORDS_KEY))
        count = 0
        for value in raw.values():
            record = json.loads(value)
            if record.get("v", 1) >= VERSION:
                continue
            info = self._info(record)
            if await self._upgrade(value, info, self._unseal(info, record)):
                count += 1
        return count

    def _record(self, info: ConnectionInfo, credentials: Credentials) -> str:
        bound = {name: getattr(info, name) for name in _BOUND}
        sealed = self._box.encrypt(
            json.dumps(
                {
                    **bound,
                    "api_key": credentials.api_key,
                    "client_id": credentials.client_id,
                    "client_secret": credentials.client_secret,
                }
            )
        )
        return json.dumps({"v": VERSION, **info.to_dict(), "secret": sealed})

    async def _upgrade(self, raw: bytes, info: ConnectionInfo, credentials: Credentials) -> bool:
        rewritten = await self._rewrite(
            keys=[RECORDS_KEY], args=[info.pcid, raw, self._record(info, credentials)]
        )
        if rewritten:
            logger.info("mcp.connection_migrated", connection=info.name, pcid=info.pcid)
        return bool(rewritten)

    async def find(self, ref: str, *, tenant: str = DEFAULT_TENANT) -> Connection | None:
        """A connection by PCID (any tenant) or by name within ``tenant``."""
        found = await self.get(ref, tenant=None)
        if found is not None:
            return found
        name_key = tenant + _SEPARATOR + ref.strip()
        pcid = await cast(Awaitable[bytes | None], self._redis.hget(NAMES_KEY, name_key))
        if pcid is None:
            return None
        return await self.get(pcid.decode(), tenant=tenant)

    async def remove(self, pcid: str) -> bool:
        """Delete the connection ``pcid``; ``False`` if there was none."""
        removed = await self._remove(keys=[RECORDS_KEY, NAMES_KEY], args=[pcid, _SEPARATOR])
        return bool(removed)

    @staticmethod
    def _info(record: Mapping[str, Any]) -> ConnectionInfo:
        return ConnectionInfo(
            pcid=record["pcid"],
            name=record["name"],
            tenant=record["tenant"],
            auth=record["auth"],
            org_id=record.get("org_id"),
            base_url=record.get("base_url"),
            created_at=record["created_at"],
        )

    def _unseal(self, info: ConnectionInfo, record: Mapping[str, Any]) -> Credentials:
        try:
            secret = json.loads(self._box.decrypt(record["secret"]))
        except SecretBoxError as exc:
            raise ConnectionStoreError(
                f"cannot decrypt connection {info.name!r}: wrong CALHOOKS_ENCRYPTION_KEY?"
            ) from exc
        if secret.get("pcid") != info.pcid or secret.get("tenant") != info.tenant:
            raise ConnectionStoreError(
                f"connection {info.name!r} holds credentials sealed for another connection"
            )
        if record.get("v", 1) >= VERSION:
            altered = [name for name in _BOUND if secret.get(name) != getattr(info, name)]
            if altered:
                logger.warning("mcp.connection_altered", connection=info.name, fields=altered)
                raise ConnectionStoreError(
                    f"connection {info.name!r} was altered in Redis ({', '.join(altered)} "
                    "differ from what was sealed): refusing to use its credentials"
                )
        credentials = Credentials(
            api_key=secret.get("api_key"),
            client_id=secret.get("client_id"),
            client_secret=secret.get("client_secret"),
        )
        register_secret(credentials.api_key)
        register_secret(credentials.client_secret)
        return credentials
