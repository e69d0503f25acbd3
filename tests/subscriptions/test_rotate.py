"""Tests of secret rotation with the real intake: continuous deliveries, not one rejected."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from calhooks.service.app import create_app
from calhooks.service.calcom.client import CalcomClient
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions.apply import apply_webhooks
from calhooks.service.subscriptions.desired import desired_factory
from calhooks.service.subscriptions.errors import RotationError
from calhooks.service.subscriptions.ping import direct_ping
from calhooks.service.subscriptions.propagation import wait_for_replicas
from calhooks.service.subscriptions.rotate import rotate_secret
from calhooks.service.subscriptions.secret_store import WebhookSecretStore
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app
from tests.subscriptions.conftest import make_settings
from tests.waiting import eventually

TRIGGERS = ["BOOKING_CREATED", "BOOKING_CANCELLED"]
REFRESH = 0.2  # the intake's CALHOOKS_WEBHOOK_SECRETS_REFRESH in these tests


def intake_settings(
    sandbox: RunningSandbox, redis: EmbeddedRedis, tmp: Path, **more: Any
) -> Settings:
    return make_settings(
        sandbox.url,
        redis_url=redis.url,
        data_dir=tmp,
        spool_dir=tmp / "spool",
        webhook_secrets_refresh=REFRESH,
        **more,
    )


@pytest.fixture
def intake(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,  # flushed before the intake starts, not under it
    tmp_path: Path,
) -> Iterator[Settings]:
    """The intake served on loopback; yields settings whose public URL reaches it."""
    settings = intake_settings(sandbox, redis_server, tmp_path)
    with serve_app(create_app(settings, redis_url=redis_server.url)) as url:
        yield settings.model_copy(update={"public_url": url})


def signed_with(delivery: dict[str, Any], secret: str) -> bool:
    digest = hmac.new(secret.encode(), delivery["raw"].encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(digest, delivery["signature"])


async def emit_until(sandbox: RunningSandbox, done: asyncio.Event) -> int:
    """Have the sandbox deliver booking events back to back until ``done``; count them."""
    sent = 0
    async with httpx.AsyncClient(base_url=f"{sandbox.url}/_sandbox", timeout=10) as http:
        while not done.is_set() and sent < 2000:
            trigger = TRIGGERS[sent % 2]
            response = await http.post("/events", json={"trigger": trigger, "user": "alice"})
            assert response.status_code == 202, response.text
            sent += 1
            await asyncio.sleep(0.01)
    return sent


async def delivered_more(sandbox: RunningSandbox, count: int) -> None:
    """Wait until the sandbox has made ``count`` more deliveries than it has now."""
    start = len(await sandbox.deliveries(wait=False))

    async def enough() -> bool:
        return len(await sandbox.deliveries(wait=False)) >= start + count

    await eventually(enough, what=f"{count} more deliveries")


async def test_rotation_under_continuous_deliveries_rejects_none(
    sandbox: RunningSandbox, intake: Settings, redis_client: aioredis.Redis
) -> None:
    """Deliveries flow throughout two rotations; every one is accepted, under each secret."""
    store = WebhookSecretStore.from_settings(intake, redis_client)
    desired_for = desired_factory(intake, TRIGGERS)
    async with CalcomClient.from_settings(intake) as cal:
        applied = await apply_webhooks(cal, store, desired_for, refresh_interval=REFRESH)
        first = applied.secret
        done = asyncio.Event()
        emitter = asyncio.create_task(emit_until(sandbox, done))
        await delivered_more(sandbox, 5)
        second = await rotate_secret(cal, store, desired_for, grace=60, refresh_interval=REFRESH)
        await delivered_more(sandbox, 5)
        third = await rotate_secret(cal, store, desired_for, grace=60, refresh_interval=REFRESH)
        await delivered_more(sandbox, 5)
        done.set()
        sent = await emitter
    deliveries = await sandbox.deliveries()
    assert len(deliveries) == sent > 20
    statuses = {d["status"] for d in deliveries}
    assert statuses == {202}, [d["response"] for d in deliveries if d["status"] != 202][:3]
    by_secret = {
        name: sum(signed_with(d, s.value) for d in deliveries)
        for name, s in (("first", first), ("second", second.new), ("third", third.new))
    }
    assert all(count > 0 for count in by_secret.values()), by_secret
    assert sum(by_secret.values()) == sent
    assert len(second.replicas) == 1
    [webhook] = sandbox.store.webhooks.values()
    assert webhook.secret == third.new.value
    snapshot = await store.snapshot()
    assert snapshot.current_id == third.new.id
    assert {s.id for s in snapshot.valid(time.time())} == {
        first.id,
        second.new.id,
        third.new.id,
    }


async def test_old_secret_is_accepted_for_the_grace_period_only(
    sandbox: RunningSandbox, intake: Settings, redis_client: aioredis.Redis
) -> None:
    """After a rotation the old secret verifies until its expiry, then gets 401."""
    store = WebhookSecretStore.from_settings(intake, redis_client)
    desired_for = desired_factory(intake, TRIGGERS)
    url = desired_for(None).subscriber_url
    async with CalcomClient.from_settings(intake) as cal, httpx.AsyncClient() as http:
        old = (await apply_webhooks(cal, store, desired_for, refresh_interval=REFRESH)).secret
        rotated = await rotate_secret(cal, store, desired_for, grace=30, refresh_interval=REFRESH)
        assert (await direct_ping(http, url, old)).status == 200
        assert (await direct_ping(http, url, rotated.new)).status == 200
        again = await rotate_secret(cal, store, desired_for, grace=0, refresh_interval=REFRESH)
        # Expiries reach each replica at its next refresh of the store.
        await wait_for_replicas(store, await store.version(), refresh_interval=REFRESH)
        refused = await direct_ping(http, url, rotated.new)
        assert refused.status == 401
        assert not refused.verified
        assert (await direct_ping(http, url, again.new)).verified
        assert (await direct_ping(http, url, old)).status == 401
    assert set(again.purged) == {rotated.new.id, old.id}  # no grace: gone at once
    assert [s.id for s in await store.valid()] == [again.new.id]


async def test_rotation_without_a_webhook_asks_for_apply(
    sandbox: RunningSandbox, intake: Settings, redis_client: aioredis.Redis
) -> None:
    """Rotating before any apply fails clearly and stores nothing valid."""
    store = WebhookSecretStore.from_settings(intake, redis_client)
    async with CalcomClient.from_settings(intake) as cal:
        with pytest.raises(RotationError, match="webhooks apply"):
            await rotate_secret(
                cal, store, desired_factory(intake, TRIGGERS), grace=60, refresh_interval=REFRESH
            )
    assert await store.valid() == []


async def test_rotation_waits_for_a_live_replica_to_load_the_new_secret(
    sandbox: RunningSandbox, settings: Settings, redis_client: aioredis.Redis
) -> None:
    """Cal.com keeps the old secret until every live replica has loaded the new one."""
    store = WebhookSecretStore.from_settings(settings, redis_client)
    desired_for = desired_factory(settings, TRIGGERS)
    async with CalcomClient.from_settings(settings) as cal:
        applied = await apply_webhooks(cal, store, desired_for, refresh_interval=REFRESH)
        await store.acknowledge("slow-replica", await store.version())
        rotation = asyncio.create_task(
            rotate_secret(cal, store, desired_for, grace=60, refresh_interval=1.0)
        )
        for _ in range(1000):  # until the new secret is stored
            if len(await store.valid()) == 2:
                break
            await asyncio.sleep(0.01)
        # A negative ("the rotation has not gone on") needs a window: three of its refreshes.
        await asyncio.sleep(3 * 1.0)
        [webhook] = sandbox.store.webhooks.values()
        assert not rotation.done()
        assert webhook.secret == applied.secret.value
        await store.acknowledge("slow-replica", await store.version())
        result = await rotation
    assert result.replicas == ("slow-replica",)
    assert sandbox.store.webhooks[webhook.id].secret == result.new.value


async def test_a_replica_stuck_on_an_old_version_stops_the_rotation(
    sandbox: RunningSandbox, settings: Settings, redis_client: aioredis.Redis
) -> None:
    """A replica alive but stuck on an old version: Cal.com keeps its secret, the new is dropped."""
    store = WebhookSecretStore.from_settings(settings, redis_client)
    desired_for = desired_factory(settings, TRIGGERS)
    async with CalcomClient.from_settings(settings) as cal:
        applied = await apply_webhooks(cal, store, desired_for, refresh_interval=REFRESH)
        stuck_at = await store.version()

        async def stuck_replica() -> None:
            while True:
                await store.acknowledge("stuck-replica", stuck_at)
                await asyncio.sleep(0.05)

        heartbeat = asyncio.create_task(stuck_replica())
        try:
            with pytest.raises(RotationError, match="stuck-replica"):
                await rotate_secret(cal, store, desired_for, grace=60, refresh_interval=0.1)
        finally:
            heartbeat.cancel()
    [webhook] = sandbox.store.webhooks.values()
    assert webhook.secret == applied.secret.value
    assert [s.id for s in await store.valid()] == [applied.secret.id]


async def test_replicas_gone_quiet_are_not_waited_for(redis_client: aioredis.Redis) -> None:
    """Only replicas heard from recently count; one silent for long is forgotten."""
    from calhooks.service.core.secretbox import SecretBox, generate_key

    now = [1000.0]
    store = WebhookSecretStore(
        redis_client, SecretBox(generate_key()), deployment="t", clock=lambda: now[0]
    )
    await store.acknowledge("dead", 1)
    now[0] += 10
    await store.acknowledge("live", 5)
    assert await wait_for_replicas(store, 5, refresh_interval=1, clock=lambda: now[0]) == ["live"]
    now[0] += 2 * 24 * 3600
    await store.acknowledge("live", 5)
    await wait_for_replicas(store, 5, refresh_interval=1, clock=lambda: now[0])
    assert sorted(await store.replicas()) == ["live"]
