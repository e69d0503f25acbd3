"""Tests of the webhook secret store in a real Redis: generation, encryption, expiry, versions."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import cast

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions.errors import SecretStoreError
from calhooks.service.subscriptions.secret_store import (
    SECRET_PREFIX,
    WebhookSecretStore,
    generate_secret,
)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(
    redis: aioredis.Redis, key: str, clock: Clock, deployment: str = "prod"
) -> WebhookSecretStore:
    return WebhookSecretStore(redis, SecretBox(key), deployment=deployment, clock=clock)


def test_generated_secrets_are_long_random_and_url_safe() -> None:
    """Each secret carries 256 random bits; no two are alike."""
    values = {generate_secret() for _ in range(200)}
    assert len(values) == 200
    for value in values:
        assert value.startswith(SECRET_PREFIX)
        body = value.removeprefix(SECRET_PREFIX)
        assert len(body) == 43
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


async def test_secrets_are_encrypted_at_rest(redis_client: aioredis.Redis) -> None:
    """Nothing Redis holds contains the secret in clear; the store reads it back."""
    store = make_store(redis_client, generate_key(), Clock())
    secret, created = await store.ensure_current()
    assert created
    dump = b""
    for key in await redis_client.keys("*"):
        kind = await redis_client.type(key)
        if kind == b"hash":
            fields = await cast(Awaitable[dict[bytes, bytes]], redis_client.hgetall(key))
            for field, value in fields.items():
                dump += field + value
        elif kind == b"string":
            dump += await redis_client.get(key) or b""
    assert dump
    assert secret.value.encode() not in dump
    assert secret.value.removeprefix(SECRET_PREFIX)[:16].encode() not in dump
    assert (await store.current()) == secret
    again, created_again = await store.ensure_current()
    assert (again, created_again) == (secret, False)


async def test_a_second_store_with_the_same_key_sees_every_change(
    redis_client: aioredis.Redis,
) -> None:
    """Another process (replica) reads what one wrote; each change moves the version."""
    key, clock = generate_key(), Clock()
    writer, reader = make_store(redis_client, key, clock), make_store(redis_client, key, clock)
    assert await reader.version() == 0
    first = await writer.add(make_current=True)
    v1 = await reader.version()
    second = await writer.add(make_current=False)
    v2 = await reader.version()
    assert 0 < v1 < v2
    snapshot = await reader.snapshot()
    assert snapshot.version == v2
    assert snapshot.current == first
    assert [s.id for s in snapshot.valid(clock.now)] == [first.id, second.id]
    await writer.promote(second.id, retire={first.id: clock.now + 60})
    snapshot = await reader.snapshot()
    assert snapshot.current_id == second.id
    assert [s.id for s in snapshot.valid(clock.now)] == [second.id, first.id]
    clock.now += 60
    assert [s.id for s in snapshot.valid(clock.now)] == [second.id]


async def test_purge_deletes_only_expired_non_current_secrets(redis_client: aioredis.Redis) -> None:
    """Expired secrets go; valid ones and the current one stay."""
    clock = Clock()
    store = make_store(redis_client, generate_key(), clock)
    current = await store.add(make_current=True)
    old = await store.add(make_current=False, expires_at=clock.now + 10)
    older = await store.add(make_current=False, expires_at=clock.now - 1)
    await store.expire(current.id, clock.now - 5)  # current never goes, even if expired
    assert await store.purge_expired() == [older.id]
    clock.now += 10
    assert await store.purge_expired() == [old.id]
    assert [s.id for s in (await store.snapshot()).secrets] == [current.id]
    assert await cast(Awaitable[int], redis_client.hlen(store.expiry_key)) == 1


async def test_wrong_key_is_a_clear_error(redis_client: aioredis.Redis) -> None:
    """Secrets written under one key cannot be read with another, and say why."""
    clock = Clock()
    await make_store(redis_client, generate_key(), clock).add(make_current=True)
    with pytest.raises(SecretStoreError, match="CALHOOKS_ENCRYPTION_KEY"):
        await make_store(redis_client, generate_key(), clock).snapshot()


async def test_a_record_moved_to_another_id_is_refused(redis_client: aioredis.Redis) -> None:
    """The id is sealed with the secret: copying a ciphertext under another id fails."""
    key, clock = generate_key(), Clock()
    store = make_store(redis_client, key, clock)
    secret = await store.add(make_current=True)
    raw = await cast(Awaitable[bytes | None], redis_client.hget(store.secrets_key, secret.id))
    assert raw is not None
    forged = raw.replace(secret.id.encode(), b"forged")
    await cast(Awaitable[int], redis_client.hset(store.secrets_key, "forged", forged.decode()))
    with pytest.raises(SecretStoreError, match="another id"):
        await make_store(redis_client, key, clock).snapshot()


async def test_deployments_keep_separate_secrets(redis_client: aioredis.Redis) -> None:
    """Two deployments sharing a Redis never see each other's secrets."""
    key, clock = generate_key(), Clock()
    prod = make_store(redis_client, key, clock, "prod")
    staging = make_store(redis_client, key, clock, "staging")
    await prod.add(make_current=True)
    assert (await staging.snapshot()).secrets == ()


def test_store_needs_an_encryption_key(redis_client: aioredis.Redis) -> None:
    """Without CALHOOKS_ENCRYPTION_KEY the store refuses to work, naming the fix."""
    with pytest.raises(SecretStoreError, match="calhooks keygen"):
        WebhookSecretStore.from_settings(Settings(encryption_key=None), redis_client)
    # Settings refuse a bad key first (SettingsError); the store checks it again regardless.
    unchecked = Settings.model_construct(encryption_key=SecretStr("nope"))
    with pytest.raises(SecretStoreError, match="not a valid Fernet key"):
        WebhookSecretStore.from_settings(unchecked, redis_client)


def test_secret_values_stay_out_of_reprs() -> None:
    """A stored secret printed by accident shows its id, never its value."""
    from calhooks.service.subscriptions.secret_store import StoredSecret

    assert "whsec_x" not in repr(StoredSecret("id1", "whsec_xyz", 0.0))
