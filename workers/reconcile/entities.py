"""What reconciliation lists, and how a change of each kind of entity becomes an event.

A ``Kind`` names the list operation (a tool, or the internal bookings operation), how an
item is keyed and stored in the snapshot (``compact``), and which trigger a change gets
(``change``: ``None`` for a change no rule can use - the snapshot still takes it). Bookings
are a kind too; their changes are turned into Cal.com's own triggers by ``bookings``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from calhooks.service.calcom.tools import ORG_BOOKINGS, get_operation
from calhooks.workers.reconcile import triggers
from calhooks.workers.reconcile.bookings import webhook_payload

#: ``change(before, after)`` (either may be ``None``: created, deleted) -> trigger or ``None``.
Change = Callable[[Mapping[str, Any] | None, Mapping[str, Any] | None], str | None]


@dataclass(frozen=True)
class Kind:
    """One listable kind of entity."""

    name: str
    operation: str
    change: Change
    key: Callable[[Mapping[str, Any]], str] = lambda item: str(item["id"])
    compact: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda item: dict(item)

    @property
    def page_size(self) -> int:
        """The largest page Cal.com allows for this list (250 where it states none)."""
        take = get_operation(self.operation).by_name["take"].schema
        return int(take.get("maximum", 250))


def _three(created: str, updated: str | None, deleted: str) -> Change:
    def change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
        if before is None:
            return created
        if after is None:
            return deleted
        return updated

    return change


def _membership(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    if before is None:
        return triggers.MEMBERSHIP_CREATED
    if after is None:
        return triggers.MEMBERSHIP_DELETED
    if before.get("role") != after.get("role"):
        return triggers.MEMBERSHIP_ROLE_CHANGED
    return None


def _webhook(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    return triggers.WEBHOOK_CHANGED


def webhook_without_secret(item: Mapping[str, Any]) -> dict[str, Any]:
    """A listed webhook with its secret (Cal.com returns it in clear) replaced by a
    fingerprint: nothing stores or emits the secret, and a rotation still shows as a change."""
    compact = dict(item)
    secret = compact.pop("secret", None)
    if secret is not None:
        digest = hashlib.sha256(str(secret).encode()).hexdigest()[:16]
        compact["secretFingerprint"] = f"sha256:{digest}"
    return compact


def _no_event(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    return None  # bookings: ``bookings.missed`` decides


MEMBERSHIPS = Kind(
    "memberships", "cal_organizations_memberships_controller_get_all_memberships", _membership
)
USERS = Kind(
    "users",
    "cal_organizations_users_controller_get_organizations_users",
    _three(triggers.USER_CREATED, triggers.USER_UPDATED, triggers.USER_DELETED),
)
OOO = Kind(
    "ooo",
    "cal_organizations_users_ooocontroller_get_organization_users_ooo",
    _three(triggers.OOO_CREATED, triggers.OOO_UPDATED, triggers.OOO_DELETED),
)
WEBHOOKS = Kind(
    "webhooks",
    "cal_organizations_webhooks_controller_get_all_organization_webhooks",
    _webhook,
    compact=webhook_without_secret,
)
BOOKINGS = Kind(
    "bookings",
    ORG_BOOKINGS,
    _no_event,
    key=lambda item: str(item["uid"]),
    compact=webhook_payload,
)

#: Every kind, in the order a run lists them.
KINDS: tuple[Kind, ...] = (MEMBERSHIPS, USERS, OOO, WEBHOOKS, BOOKINGS)
