"""Tests of the pure plan: desired webhook vs the organization's webhooks -> actions."""

from __future__ import annotations

from calhooks.service.subscriptions.desired import DesiredWebhook
from calhooks.service.subscriptions.plan import (
    NEW_SECRET,
    NO_SECRET,
    UNKNOWN_SECRET,
    Change,
    CreateWebhook,
    DeleteWebhook,
    StaleWebhook,
    UpdateWebhook,
    plan_webhooks,
)
from calhooks.service.subscriptions.remote import RemoteWebhook
from calhooks.service.subscriptions.secret_store import StoredSecret

URL = "https://hooks.example.com/webhooks/cal?calhooks=prod"
OLD_URL = "https://old.example.com/webhooks/cal?calhooks=prod"
SECRET = StoredSecret("s2", "whsec_current", 2.0)
OLD_SECRET = StoredSecret("s1", "whsec_old", 1.0, expires_at=100.0)
TRIGGERS = ("BOOKING_CREATED", "BOOKING_CANCELLED")


def desired(secret: StoredSecret | None = SECRET) -> DesiredWebhook:
    return DesiredWebhook(URL, "prod", TRIGGERS, secret)


def hook(
    webhook_id: str = "w1",
    url: str = URL,
    *,
    active: bool = True,
    triggers: tuple[str, ...] = TRIGGERS,
    secret: str | None = SECRET.value,
    template: str | None = None,
) -> RemoteWebhook:
    return RemoteWebhook(webhook_id, url, active, triggers, template, secret)


def test_empty_org_plans_one_create_and_a_new_secret() -> None:
    """With no webhooks and no secret yet, the plan generates one and creates the webhook."""
    plan = plan_webhooks(desired(None), [])
    assert plan.actions == (CreateWebhook(URL, TRIGGERS, NEW_SECRET),)
    assert plan.generate_secret
    assert plan.has_changes
    assert plan.kept is None


def test_webhook_in_sync_plans_nothing() -> None:
    """The desired webhook already there, with the same triggers in any order: no changes."""
    current = hook(triggers=tuple(reversed(TRIGGERS)))
    plan = plan_webhooks(desired(), [current])
    assert plan.actions == ()
    assert not plan.has_changes
    assert plan.in_sync == plan.kept == current


def test_drift_in_one_webhook_is_one_update_naming_every_change() -> None:
    """Inactive, other triggers, a template and an old secret: one update says it all."""
    drifted = hook(
        active=False,
        triggers=("BOOKING_CREATED", "OOO_CREATED"),
        secret=OLD_SECRET.value,
        template='{"x": "{{title}}"}',
    )
    plan = plan_webhooks(desired(), [drifted], known_secrets=[SECRET, OLD_SECRET])
    assert plan.kept == drifted
    assert plan.actions == (
        UpdateWebhook(
            drifted,
            (
                Change("active", False, True),
                Change("triggers", ("BOOKING_CREATED", "OOO_CREATED"), TRIGGERS),
                Change("payloadTemplate", '{"x": "{{title}}"}', None),
                Change("secret", "s1", "s2"),
            ),
        ),
    )


def test_secret_labels_never_carry_values() -> None:
    """A webhook without secret, or with one calhooks does not know, is labelled, not shown."""
    none = plan_webhooks(desired(), [hook(secret=None)]).actions[0]
    unknown = plan_webhooks(desired(), [hook(secret="operator-secret")]).actions[0]
    fresh = plan_webhooks(desired(None), [hook()]).actions[0]
    assert isinstance(none, UpdateWebhook)
    assert isinstance(unknown, UpdateWebhook)
    assert isinstance(fresh, UpdateWebhook)
    assert none.changes == (Change("secret", NO_SECRET, "s2"),)
    assert unknown.changes == (Change("secret", UNKNOWN_SECRET, "s2"),)
    assert fresh.changes == (Change("secret", UNKNOWN_SECRET, NEW_SECRET),)


def test_duplicate_triggers_count_as_drift() -> None:
    """Cal.com once accepted repeated triggers; the plan cleans them up."""
    doubled = hook(triggers=(*TRIGGERS, "BOOKING_CREATED"))
    plan = plan_webhooks(desired(), [doubled])
    assert plan.actions == (
        UpdateWebhook(doubled, (Change("triggers", doubled.triggers, TRIGGERS),)),
    )


def test_foreign_webhooks_are_never_touched() -> None:
    """Webhooks without this deployment's mark get no action, even at this very intake."""
    others = [
        hook("z1", "https://zapier.example/hooks/1", active=False, secret=None),
        hook("s1", "https://hooks.example.com/webhooks/cal?calhooks=staging"),
        hook("h1", "https://hooks.example.com/webhooks/cal", triggers=("MEETING_ENDED",)),
    ]
    plan = plan_webhooks(desired(), [*others, hook()], prune=True)
    assert plan.actions == ()
    assert plan.foreign == tuple(others)
    assert [w.id for w in plan.foreign_same_endpoint] == ["s1", "h1"]


def test_stale_own_webhooks_are_kept_without_prune_and_deleted_with_it() -> None:
    """An own webhook at an old URL is reported and kept, or deleted when pruning."""
    old = hook("old", OLD_URL)
    kept = plan_webhooks(desired(), [old, hook()])
    assert kept.actions == ()
    assert kept.stale_kept == (StaleWebhook(old, "old subscriber URL"),)
    assert kept.has_changes is False
    pruned = plan_webhooks(desired(), [old, hook()], prune=True)
    assert pruned.actions == (DeleteWebhook(old, "old subscriber URL"),)
    assert pruned.stale_kept == ()


def test_url_change_creates_the_new_webhook_before_deleting_the_old() -> None:
    """After a public URL change the new webhook comes first, so deliveries never stop."""
    old = hook("old", OLD_URL)
    plan = plan_webhooks(desired(), [old], prune=True)
    assert plan.actions == (
        CreateWebhook(URL, TRIGGERS, "s2"),
        DeleteWebhook(old, "old subscriber URL"),
    )


def test_duplicates_at_the_desired_url_keep_the_one_needing_fewest_changes() -> None:
    """Of several own webhooks at the URL, the best one is kept and the rest are stale."""
    inactive = hook("a", active=False)
    good = hook("b")
    wrong_secret = hook("c", secret="x")
    plan = plan_webhooks(desired(), [inactive, wrong_secret, good], prune=True)
    assert plan.in_sync == good
    assert plan.actions == (
        DeleteWebhook(wrong_secret, "duplicate of the desired webhook"),
        DeleteWebhook(inactive, "duplicate of the desired webhook"),
    )
