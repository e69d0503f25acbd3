"""Plans and their outcomes as text for people and as JSON for scripts.

Secrets appear only as their ids unless ``show_secret`` is asked for; then only calhooks'
own secret is printed, never one Cal.com holds that calhooks does not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from calhooks.service.subscriptions.apply import ApplyResult
from calhooks.service.subscriptions.plan import (
    Action,
    Change,
    CreateWebhook,
    DeleteWebhook,
    Plan,
    StaleWebhook,
    UpdateWebhook,
)
from calhooks.service.subscriptions.remote import RemoteWebhook
from calhooks.service.subscriptions.rotate import RotationResult
from calhooks.service.subscriptions.secret_store import SecretSnapshot, StoredSecret


def _triggers(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "(none)"


def _change_text(change: Change) -> str:
    if change.field == "triggers":
        before, after = set(change.before), set(change.after)
        added = [t for t in change.after if t not in before]
        removed = [t for t in change.before if t not in after]
        parts = [f"+{t}" for t in added] + [f"-{t}" for t in dict.fromkeys(removed)]
        if not parts:  # same set, duplicates removed
            parts = ["remove duplicates"]
        return "triggers " + " ".join(parts)
    if change.field == "payloadTemplate":
        return "payload template removed (the intake reads Cal.com's default body)"
    if change.field == "active":
        return "re-activate"
    return f"secret {change.before} -> {change.after}"


def action_text(action: Action) -> str:
    """One line saying what an action does (or did)."""
    if isinstance(action, CreateWebhook):
        return (
            f"+ create webhook -> {action.subscriber_url}: active, triggers"
            f" {_triggers(action.triggers)}, secret {action.secret_id}"
        )
    if isinstance(action, UpdateWebhook):
        changes = "; ".join(_change_text(c) for c in action.changes)
        return f"~ update webhook {action.webhook.id}: {changes}"
    return (
        f"- delete webhook {action.webhook.id} ({action.reason}: {action.webhook.subscriber_url})"
    )


def _stale_text(stale: StaleWebhook) -> str:
    return f"! webhook {stale.webhook.id} ({stale.reason}: {stale.webhook.subscriber_url})"


def plan_lines(plan: Plan, *, show_secret: bool = False) -> list[str]:
    """The plan as text: what is wanted, each action, what is kept, what is not calhooks'."""
    desired = plan.desired
    lines = [
        f"deployment {desired.deployment}: webhook -> {desired.subscriber_url}",
        f"  triggers: {_triggers(desired.triggers)}",
    ]
    lines += _secret_lines(desired.secret, show_secret)
    if plan.has_changes:
        count = len(plan.actions) + int(plan.generate_secret)
        lines.append(f"plan: {count} change{'s' if count != 1 else ''}")
        if plan.generate_secret:
            lines.append("  + generate a webhook secret (kept encrypted in Redis)")
        lines += [f"  {action_text(a)}" for a in plan.actions]
    else:
        lines.append(f"no changes: webhook {plan.in_sync.id if plan.in_sync else '?'} is in sync")
    if plan.stale_kept:
        lines.append("stale, kept (apply --prune deletes them):")
        lines += [f"  {_stale_text(s)}" for s in plan.stale_kept]
    lines += foreign_lines(plan)
    return lines


def _secret_lines(secret: StoredSecret | None, show_secret: bool) -> list[str]:
    if secret is None:
        return ["  secret: none yet"]
    if show_secret:
        return [f"  secret: {secret.id} {secret.value}"]
    return [f"  secret: {secret.id} (--show-secret prints it)"]


def foreign_lines(plan: Plan) -> list[str]:
    if not plan.foreign:
        return []
    count = len(plan.foreign)
    lines = [f"not calhooks' (never touched): {count} webhook{'s' if count != 1 else ''}"]
    lines += [
        f"  note: webhook {w.id} ({w.subscriber_url}) also delivers to this intake;"
        " its events arrive twice (deduplicated) - delete it once calhooks' own is active"
        for w in plan.foreign_same_endpoint
    ]
    return lines


def _change_dict(change: Change) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    return {"field": change.field, "before": plain(change.before), "after": plain(change.after)}


def action_dict(action: Action) -> dict[str, Any]:
    if isinstance(action, CreateWebhook):
        return {
            "action": "create",
            "subscriberUrl": action.subscriber_url,
            "triggers": list(action.triggers),
            "secretId": action.secret_id,
        }
    if isinstance(action, UpdateWebhook):
        return {
            "action": "update",
            "webhook": action.webhook.summary(),
            "changes": [_change_dict(c) for c in action.changes],
        }
    assert isinstance(action, DeleteWebhook)
    return {"action": "delete", "webhook": action.webhook.summary(), "reason": action.reason}


def _webhook_list(items: Sequence[RemoteWebhook]) -> list[dict[str, Any]]:
    return [w.summary() for w in items]


def plan_dict(plan: Plan, *, show_secret: bool = False) -> dict[str, Any]:
    """The plan as JSON-ready data."""
    secret = plan.desired.secret
    desired: dict[str, Any] = {
        "deployment": plan.desired.deployment,
        "subscriberUrl": plan.desired.subscriber_url,
        "triggers": list(plan.desired.triggers),
        "secretId": secret.id if secret else None,
    }
    if show_secret and secret is not None:
        desired["secret"] = secret.value
    return {
        "desired": desired,
        "changes": plan.has_changes,
        "generateSecret": plan.generate_secret,
        "actions": [action_dict(a) for a in plan.actions],
        "inSync": plan.in_sync.summary() if plan.in_sync else None,
        "staleKept": [
            {"webhook": s.webhook.summary(), "reason": s.reason} for s in plan.stale_kept
        ],
        "foreign": _webhook_list(plan.foreign),
        "foreignSameEndpoint": [w.id for w in plan.foreign_same_endpoint],
    }


def done_text(action: Action, webhook_id: str, note: str | None = None) -> str:
    """One line saying what was done."""
    if isinstance(action, CreateWebhook):
        text = (
            f"created webhook {webhook_id} -> {action.subscriber_url}: active, triggers"
            f" {_triggers(action.triggers)}"
        )
    elif isinstance(action, UpdateWebhook):
        text = f"updated webhook {webhook_id}: " + "; ".join(
            _change_text(c) for c in action.changes
        )
    else:
        text = f"deleted webhook {webhook_id} ({action.reason}: {action.webhook.subscriber_url})"
    return f"{text} ({note})" if note else text


def apply_lines(result: ApplyResult, *, show_secret: bool = False) -> list[str]:
    """What ``apply`` did, as text."""
    plan = result.plan
    lines = [
        f"deployment {plan.desired.deployment}: webhook -> {plan.desired.subscriber_url}",
        f"  triggers: {_triggers(plan.desired.triggers)}",
        *_secret_lines(result.secret, show_secret),
    ]
    if result.secret_created:
        lines.append(f"generated webhook secret {result.secret.id} (kept encrypted in Redis)")
    lines += [done_text(d.action, d.webhook_id, d.note) for d in result.done]
    if not result.changed:
        lines.append(f"no changes: webhook {plan.in_sync.id if plan.in_sync else '?'} is in sync")
    if plan.stale_kept:
        lines.append("stale, kept (apply --prune deletes them):")
        lines += [f"  {_stale_text(s)}" for s in plan.stale_kept]
    return lines + foreign_lines(plan)


def apply_dict(result: ApplyResult, *, show_secret: bool = False) -> dict[str, Any]:
    data = plan_dict(result.plan, show_secret=show_secret)
    data["secretCreated"] = result.secret_created
    data["done"] = [
        {**action_dict(d.action), "webhookId": d.webhook_id, "note": d.note} for d in result.done
    ]
    data["changes"] = result.changed
    return data


def _moment(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def rotation_lines(result: RotationResult, *, show_secret: bool = False) -> list[str]:
    """What ``rotate`` did, as text."""
    lines = [f"webhook {result.webhook_id} now signs with secret {result.new.id}"]
    if show_secret:
        lines.append(f"  secret: {result.new.value}")
    if result.replicas:
        lines.append(f"  confirmed by intake replicas: {', '.join(result.replicas)}")
    else:
        lines.append("  no intake replica is reading secrets from Redis right now")
    lines += [
        f"  old secret {old} accepted until {_moment(until)}"
        for old, until in sorted(result.retired.items())
    ]
    if result.purged:
        lines.append(f"  deleted expired secrets: {', '.join(result.purged)}")
    return lines


def rotation_dict(result: RotationResult, *, show_secret: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "webhookId": result.webhook_id,
        "secretId": result.new.id,
        "replicas": list(result.replicas),
        "retired": {k: _moment(v) for k, v in sorted(result.retired.items())},
        "purged": list(result.purged),
    }
    if show_secret:
        data["secret"] = result.new.value
    return data


def secrets_rows(
    snapshot: SecretSnapshot, now: float, *, show_secret: bool = False
) -> list[dict[str, Any]]:
    """The stored secrets (newest first) with their state; values only with ``show_secret``."""
    rows = []
    for secret in sorted(snapshot.secrets, key=lambda s: -s.created_at):
        row: dict[str, Any] = {
            "id": secret.id,
            "current": secret.id == snapshot.current_id,
            "valid": secret.valid_at(now),
            "created": _moment(secret.created_at),
            "expires": _moment(secret.expires_at) if secret.expires_at is not None else None,
        }
        if show_secret:
            row["secret"] = secret.value
        rows.append(row)
    return rows
