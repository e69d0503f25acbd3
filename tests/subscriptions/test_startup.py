"""Tests of what the intake takes from subscriptions: stored secrets and auto-apply at start-up."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from calhooks.service.app import create_app
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.core.settings import Settings
from calhooks.service.events import reapply_key
from calhooks.service.subscriptions.secret_source import StoredSecretsSource
from calhooks.service.subscriptions.secret_store import WebhookSecretStore
from calhooks.service.subscriptions.startup import auto_apply, intake_extension, watch_reapply
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app
from tests.subscriptions.conftest import make_settings, write_rules
from tests.waiting import eventually


def replica_settings(
    sandbox: RunningSandbox, redis: EmbeddedRedis, tmp: Path, **more: object
) -> Settings:
    tmp.mkdir(parents=True, exist_ok=True)
    return make_settings(
        sandbox.url,
        rules_file=write_rules(tmp / "rules.yaml", "BOOKING_CREATED"),
        redis_url=redis.url,
        data_dir=tmp,
        spool_dir=tmp / "spool",
        webhook_secrets_refresh=0.2,
        webhook_extra_triggers="BOOKING_CREATED",
        **more,
    )


async def wait_for_lock_free(redis: aioredis.Redis, key: str) -> None:
    for _ in range(500):
        if not await redis.exists(key):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the webhooks lock stayed taken")


async def test_replicas_starting_together_apply_once_and_verify_deliveries(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """Three replicas with auto-apply make one webhook, and its deliveries are accepted."""
    ports = [free_port("127.0.0.1") for _ in range(3)]
    public = f"http://127.0.0.1:{ports[0]}"  # the replicas' load balancer, in effect
    with ExitStack() as stack:
        for index, port in enumerate(ports):
            settings = replica_settings(
                sandbox,
                redis_server,
                tmp_path / str(index),
                public_url=public,
                webhooks_auto_apply=True,
            )
            app = create_app(settings, redis_url=redis_server.url)
            stack.enter_context(serve_app(app, port=port))
        await eventually(lambda: len(sandbox.store.webhooks) == 1, what="one webhook")
        store = WebhookSecretStore.from_settings(settings, redis_client)
        await wait_for_lock_free(redis_client, store.lock_key)
        [webhook] = sandbox.store.webhooks.values()
        assert webhook.subscriber_url == f"{public}/webhooks/cal?calhooks=test"
        assert webhook.active
        assert webhook.triggers == ["BOOKING_CREATED"]
        assert len((await store.snapshot()).secrets) == 1
        async with httpx.AsyncClient(base_url=f"{sandbox.url}/_sandbox") as http:
            emitted = await http.post(
                "/events", json={"trigger": "BOOKING_CREATED", "user": "alice", "wait": True}
            )
        assert [d["status"] for d in emitted.json()["deliveries"]] == [202]
    assert len(sandbox.store.webhooks) == 1


async def test_auto_apply_needs_the_rules_file(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    """Without the workers' rules, auto-apply changes nothing rather than drop their triggers."""
    settings = make_settings(sandbox.url, rules_file=None, webhook_extra_triggers="OOO_CREATED")
    assert await auto_apply(settings, redis_client) is None
    assert sandbox.store.webhooks == {}


async def test_auto_apply_without_public_url_logs_and_returns(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A configuration problem is reported, never raised into the intake's start-up."""
    settings = make_settings(sandbox.url, public_url=None)
    assert await auto_apply(settings, redis_client) is None
    assert sandbox.store.webhooks == {}


async def test_auto_apply_retries_a_passing_failure(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Cal.com down at start-up: auto-apply waits and tries again."""
    from calhooks.service.sandbox import FaultRule

    sandbox.sandbox.faults.add(FaultRule(status=503, times=8))
    rules = write_rules(tmp_path / "rules.yaml", "OOO_CREATED")
    settings = make_settings(sandbox.url, rules_file=rules, api_retries=0)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    result = await auto_apply(
        settings, redis_client, retry_delays=(1, 2, 3, 4, 5, 6, 7, 8, 9), sleep=sleep
    )
    assert result is not None
    assert result.changed
    assert len(sandbox.store.webhooks) == 1
    assert waits[0] == 1


async def test_stored_secrets_source_reloads_only_when_the_version_moves(
    sandbox: RunningSandbox, settings: Settings, redis_client: aioredis.Redis
) -> None:
    """The source costs one GET per refresh; secrets are re-read only after a change."""
    store = WebhookSecretStore.from_settings(settings, redis_client)
    source = StoredSecretsSource(store, replica="r1")
    assert await source.refresh() is True  # first load, even of nothing
    assert source.loaded
    assert source.secrets() == ()
    assert await source.refresh() is False
    secret = await store.add(make_current=True)
    assert await source.refresh() is True
    assert [s.value for s in source.secrets()] == [secret.value]
    assert await source.refresh() is False
    assert (await store.replicas())["r1"].version == await store.version()


async def test_stored_secrets_source_keeps_its_secrets_when_redis_fails(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    """A store it cannot read leaves the last loaded secrets in place, with the reason."""
    store = WebhookSecretStore.from_settings(settings, redis_client)
    secret = await store.add(make_current=True)
    source = StoredSecretsSource(store, replica="r1")
    await source.refresh()
    broken = WebhookSecretStore(
        aioredis.Redis(host="127.0.0.1", port=1), store.box, deployment=store.deployment
    )
    source.store = broken
    assert await source.refresh() is False
    assert source.error
    assert [s.value for s in source.secrets()] == [secret.value]
    await broken.redis.aclose()


def test_no_encryption_key_means_no_stored_secrets(sandbox: RunningSandbox) -> None:
    """Without CALHOOKS_ENCRYPTION_KEY the intake uses env/file secrets only."""
    extension = intake_extension(make_settings(sandbox.url, encryption_key=None))
    assert extension.sources == []
    assert extension.redis is None


async def test_a_reapply_request_from_reconciliation_restores_the_own_webhook(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Someone deactivates calhooks' webhook; reconciliation asks; the web process re-applies."""
    settings = make_settings(
        sandbox.url, rules_file=write_rules(tmp_path / "r.yaml", "OOO_CREATED")
    )
    first = await auto_apply(settings, redis_client)
    assert first is not None
    [webhook] = sandbox.store.webhooks.values()
    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_webhooks_controller_update_org_webhook",
            webhookId=webhook.id,
            active=False,
        )
    assert not sandbox.store.webhooks[webhook.id].active
    key = reapply_key(settings.webhook_deployment)
    watcher = asyncio.create_task(watch_reapply(settings, redis_client, every=0.02))
    try:
        await redis_client.set(key, "e1")
        await eventually(
            lambda: sandbox.store.webhooks[webhook.id].active, what="the webhook re-applied"
        )
        assert not await redis_client.exists(key)  # the request is taken once
        assert len(sandbox.store.webhooks) == 1
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
