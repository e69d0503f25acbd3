"""Tests of plan and apply against the sandbox Cal.com over HTTP, with the secret store in Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.errors import CalcomError
from calhooks.service.core.settings import Settings
from calhooks.service.sandbox import FaultRule
from calhooks.service.subscriptions.apply import (
    ApplyResult,
    apply_webhooks,
    execute_plan,
    plan_current,
)
from calhooks.service.subscriptions.desired import DesiredFactory, desired_factory
from calhooks.service.subscriptions.plan import (
    CreateWebhook,
    DeleteWebhook,
    UpdateWebhook,
    plan_webhooks,
)
from calhooks.service.subscriptions.remote import CREATE_TOOL, list_webhooks
from calhooks.service.subscriptions.secret_store import WebhookSecretStore
from tests.sandbox.server import RunningSandbox
from tests.subscriptions.conftest import make_settings

URL = "https://hooks.example.com/webhooks/cal?calhooks=test"
RULE_TRIGGERS = ["BOOKING_CREATED", "BOOKING_CANCELLED"]
WRITE_METHODS = {"POST", "PATCH", "DELETE"}
REFRESH = 0.2  # the intake's CALHOOKS_WEBHOOK_SECRETS_REFRESH; no intake runs in these tests


async def apply(
    cal: CalcomClient,
    store: WebhookSecretStore,
    desired_for: DesiredFactory,
    *,
    prune: bool = False,
) -> ApplyResult:
    return await apply_webhooks(cal, store, desired_for, prune=prune, refresh_interval=REFRESH)


def writes(sandbox: RunningSandbox) -> list[str]:
    """The API calls that changed something in the sandbox, as ``METHOD path``."""
    return [f"{r.method} {r.path}" for r in sandbox.requests() if r.method in WRITE_METHODS]


async def test_plan_on_an_empty_org_creates_one_webhook_and_writes_nothing(
    sandbox: RunningSandbox, settings: Settings, store: WebhookSecretStore, cal: CalcomClient
) -> None:
    """Planning reads only: it proposes a secret and a webhook, and changes nothing."""
    plan = await plan_current(cal, store, desired_factory(settings, RULE_TRIGGERS))
    assert plan.generate_secret
    assert plan.actions == (CreateWebhook(URL, ("BOOKING_CREATED", "BOOKING_CANCELLED"), "(new)"),)
    assert writes(sandbox) == []
    assert await store.current() is None


async def test_apply_creates_the_webhook_and_a_second_apply_changes_nothing(
    sandbox: RunningSandbox, settings: Settings, store: WebhookSecretStore, cal: CalcomClient
) -> None:
    """Apply creates an active webhook signed with the stored secret; again, it does nothing."""
    desired_for = desired_factory(settings, RULE_TRIGGERS)
    first = await apply(cal, store, desired_for)
    assert first.secret_created
    assert [type(d.action) for d in first.done] == [CreateWebhook]
    [made] = sandbox.store.webhooks.values()
    assert (made.id, made.subscriber_url, made.active) == (first.done[0].webhook_id, URL, True)
    assert sorted(made.triggers) == sorted(RULE_TRIGGERS)
    assert made.secret == first.secret.value == (await store.current()).value  # type: ignore[union-attr]
    assert made.payload_template is None
    recorded = await store.last_apply()
    assert recorded is not None
    assert recorded["secret_created"] is True
    assert recorded["secret_id"] == first.secret.id
    assert recorded["done"] == [{"action": "create", "webhook": made.id, "note": None}]
    assert first.secret.value not in json.dumps(recorded)

    sandbox.sandbox.requests.clear()
    second = await apply(cal, store, desired_for)
    assert not second.changed
    assert second.done == ()
    assert second.plan.in_sync is not None
    assert second.plan.in_sync.id == made.id
    assert writes(sandbox) == []
    assert not (await plan_current(cal, store, desired_for)).has_changes


async def test_rules_change_updates_the_triggers_of_the_same_webhook(
    sandbox: RunningSandbox, settings: Settings, store: WebhookSecretStore, cal: CalcomClient
) -> None:
    """New rule triggers and configured extras update the existing webhook in place."""
    await apply(cal, store, desired_factory(settings, RULE_TRIGGERS))
    [before] = sandbox.store.webhooks.values()
    extra = make_settings(sandbox.url, webhook_extra_triggers="MEETING_ENDED")
    result = await apply(cal, store, desired_factory(extra, ["OOO_CREATED"]))
    [update] = [d.action for d in result.done]
    assert isinstance(update, UpdateWebhook)
    assert update.fields() == {"triggers"}
    [after] = sandbox.store.webhooks.values()
    assert after.id == before.id
    assert sorted(after.triggers) == ["MEETING_ENDED", "OOO_CREATED"]
    assert writes(sandbox)[-1] == f"PATCH /v2/organizations/1/webhooks/{after.id}"


async def test_apply_reactivates_and_restores_a_webhook_changed_by_hand(
    sandbox: RunningSandbox, settings: Settings, store: WebhookSecretStore, cal: CalcomClient
) -> None:
    """A deactivated webhook with a template and a hand-set secret is put right."""
    desired_for = desired_factory(settings, RULE_TRIGGERS)
    await apply(cal, store, desired_for)
    [made] = sandbox.store.webhooks.values()
    await cal.call(
        "cal_organizations_webhooks_controller_update_org_webhook",
        webhookId=made.id,
        active=False,
        payloadTemplate='{"title": "{{title}}"}',
        secret="typed-by-hand",
    )
    result = await apply(cal, store, desired_for)
    [update] = [d.action for d in result.done]
    assert isinstance(update, UpdateWebhook)
    assert update.fields() == {"active", "payloadTemplate", "secret"}
    fixed = sandbox.store.webhooks[made.id]
    assert fixed.active
    assert not fixed.payload_template
    assert fixed.secret == (await store.current()).value  # type: ignore[union-attr]
    assert not (await plan_current(cal, store, desired_for)).has_changes


async def test_foreign_webhooks_are_never_touched(
    sandbox: RunningSandbox, settings: Settings, store: WebhookSecretStore, cal: CalcomClient
) -> None:
    """Webhooks calhooks did not create keep every field, even through apply --prune."""
    create = "cal_organizations_webhooks_controller_create_organization_webhook"
    foreign = [
        ("https://zapier.example/hooks/1", False, ["MEETING_ENDED"], None),
        ("https://hooks.example.com/webhooks/cal", True, ["BOOKING_CREATED"], "op-secret"),
        ("https://hooks.example.com/webhooks/cal?calhooks=staging", True, ["OOO_CREATED"], "s"),
    ]
    for url, active, triggers, secret in foreign:
        params = {"subscriberUrl": url, "active": active, "triggers": triggers}
        await cal.call(create, **params, **({"secret": secret} if secret else {}))
    snapshot = [
        (w.id, w.subscriber_url, w.active, list(w.triggers), w.secret, w.payload_template)
        for w in sandbox.store.webhooks.values()
    ]
    result = await apply(cal, store, desired_factory(settings, RULE_TRIGGERS), prune=True)
    assert [type(d.action) for d in result.done] == [CreateWebhook]
    after = [
        (w.id, w.subscriber_url, w.active, list(w.triggers), w.secret, w.payload_template)
        for w in sandbox.store.webhooks.values()
        if w.id != result.done[0].webhook_id
    ]
    assert after == snapshot
    assert [w.subscriber_url for w in result.plan.foreign_same_endpoint] == [
        "https://hooks.example.com/webhooks/cal",
        "https://hooks.example.com/webhooks/cal?calhooks=staging",
    ]


async def test_prune_removes_own_webhooks_at_an_old_url_only_when_asked(
    sandbox: RunningSandbox, settings: Settings, store: WebhookSecretStore, cal: CalcomClient
) -> None:
    """After a public URL change apply adds the new webhook; --prune then deletes the old."""
    await apply(cal, store, desired_factory(settings, RULE_TRIGGERS))
    [old] = sandbox.store.webhooks.values()
    moved = make_settings(sandbox.url, public_url="https://new.example.com/calhooks")
    desired_for = desired_factory(moved, RULE_TRIGGERS)
    kept = await apply(cal, store, desired_for)
    assert [type(d.action) for d in kept.done] == [CreateWebhook]
    assert [s.webhook.id for s in kept.plan.stale_kept] == [old.id]
    assert len(sandbox.store.webhooks) == 2
    pruned = await apply(cal, store, desired_for, prune=True)
    assert [(type(d.action), d.webhook_id) for d in pruned.done] == [(DeleteWebhook, old.id)]
    [new] = sandbox.store.webhooks.values()
    assert new.subscriber_url == "https://new.example.com/calhooks/webhooks/cal?calhooks=test"
    assert not (await plan_current(cal, store, desired_for, prune=True)).has_changes


async def test_concurrent_applies_from_many_replicas_create_one_webhook_and_one_secret(
    sandbox: RunningSandbox, settings: Settings, redis_client: aioredis.Redis
) -> None:
    """Replicas starting together serialise on the Redis lock: one creates, the rest find it."""
    desired_for = desired_factory(settings, RULE_TRIGGERS)

    async def replica() -> bool:
        store = WebhookSecretStore.from_settings(settings, redis_client)
        async with CalcomClient.from_settings(settings) as cal:
            return (await apply(cal, store, desired_for)).changed

    changed = await asyncio.gather(*(replica() for _ in range(5)))
    assert sorted(changed) == [False, False, False, False, True]
    assert len(sandbox.store.webhooks) == 1
    snapshot = await WebhookSecretStore.from_settings(settings, redis_client).snapshot()
    assert len(snapshot.secrets) == 1


async def test_a_create_that_loses_a_race_adopts_the_webhook_at_its_url(
    sandbox: RunningSandbox, settings: Settings, store: WebhookSecretStore, cal: CalcomClient
) -> None:
    """When the URL got registered after planning (409), the existing webhook is adopted."""
    desired_for = desired_factory(settings, RULE_TRIGGERS)
    secret, _ = await store.ensure_current()
    plan = plan_webhooks(desired_for(secret), [])
    await cal.call(CREATE_TOOL, subscriberUrl=URL, active=False, triggers=["OOO_CREATED"])
    [done] = await execute_plan(cal, plan, secret)
    [existing] = sandbox.store.webhooks.values()
    assert done.webhook_id == existing.id
    assert done.note is not None
    assert "adopted" in done.note
    assert (existing.active, existing.secret) == (True, secret.value)
    assert sorted(existing.triggers) == sorted(RULE_TRIGGERS)


async def test_a_failed_create_with_nothing_created_is_an_error(
    sandbox: RunningSandbox, settings: Settings, store: WebhookSecretStore, cal: CalcomClient
) -> None:
    """A 500 on create is looked into; with no webhook at the URL the error stands."""
    sandbox.sandbox.faults.add(FaultRule(tool=CREATE_TOOL, status=500, times=1))
    with pytest.raises(CalcomError) as caught:
        await apply(cal, store, desired_factory(settings, RULE_TRIGGERS))
    assert caught.value.status == 500
    assert sandbox.store.webhooks == {}
    assert [w.id for w in await list_webhooks(cal)] == []
    assert (await apply(cal, store, desired_factory(settings, RULE_TRIGGERS))).done
