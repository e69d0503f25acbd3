"""What reconciliation lists, and how a change of each kind of entity becomes an event.

A ``Kind`` names the list operation (a tool, or the internal bookings operation), how an
item is keyed and stored in the snapshot (``compact``), and which trigger a change gets
(``change``: ``None`` for a change no rule can use - the snapshot still takes it). Bookings
are a kind too; their changes are turned into Cal.com's own triggers by ``bookings``.

A kind may have ``details``: a read made once per listed item (an attribute's options), which
the pass spends from its budget too. A *derived* kind (``DERIVED``: attribute option
assignments, from the memberships listing, whose items carry each member's ``attributes``)
costs no call: it is computed from its source kind's complete listing and has a snapshot,
baseline and events of its own.
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
    #: ``(operation, parameters(item), field)``: one more read per item, its ``data``
    #: stored under ``field`` of the item's snapshot entry.
    details: tuple[str, Callable[[Mapping[str, Any]], dict[str, Any]], str] | None = None

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


def _assignment(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    if before is None:
        return triggers.ATTRIBUTE_OPTION_ASSIGNED
    if after is None:
        return triggers.ATTRIBUTE_OPTION_UNASSIGNED
    return None  # the same option still assigned (renamed, say): the snapshot takes it


def assignments(memberships: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Who is assigned which attribute option, from a memberships listing: one entry per
    member and option (``<userId>:<optionId>``) with ``attribute`` (``id``, ``name``,
    ``type``), ``option`` (``id``, ``value``), ``user`` (``id``, ``email``, ``username``,
    ``name``) and ``membershipId``."""
    entries: dict[str, dict[str, Any]] = {}
    for membership in memberships.values():
        profile = membership.get("user") or {}
        user = {
            "id": membership.get("userId"),
            "email": profile.get("email"),
            "username": profile.get("username"),
            "name": profile.get("name"),
        }
        for attribute in membership.get("attributes") or ():
            chosen = attribute.get("options")
            if chosen is None:
                chosen = [
                    {"optionId": attribute.get("optionId"), "option": attribute.get("option")}
                ]
            for option in chosen:
                option_id = option.get("optionId")
                if option_id is None:
                    continue
                entries[f"{user['id']}:{option_id}"] = {
                    "attribute": {k: attribute.get(k) for k in ("id", "name", "type")},
                    "option": {"id": option_id, "value": option.get("option")},
                    "user": user,
                    "membershipId": membership.get("id"),
                }
    return entries


def _no_event(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    return None  # bookings: ``bookings.missed`` decides; attributes: their assignments do


MEMBERSHIPS = Kind(
    "memberships", "cal_organizations_memberships_controller_get_all_memberships", _membership
)
USERS = Kind(
    "users",
    "cal_organizations_users_controller_get_organizations_users",
    _three(triggers.USER_CREATED, triggers.USER_UPDATED, triggers.USER_DELETED),
)
ASSIGNMENTS = Kind("assignments", MEMBERSHIPS.operation, _assignment)
ATTRIBUTES = Kind(
    "attributes",
    "cal_organizations_attributes_controller_get_organization_attributes",
    _no_event,  # the snapshot keeps attributes and options; assignments carry the events
    details=(
        "cal_organizations_attributes_options_controller_get_organization_attribute_options",
        lambda item: {"attributeId": str(item["id"])},
        "options",
    ),
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
KINDS: tuple[Kind, ...] = (MEMBERSHIPS, USERS, OOO, WEBHOOKS, ATTRIBUTES, BOOKINGS)
#: Kinds computed from another kind's complete listing (by its name), at no call.
DERIVED: dict[
    str, tuple[Kind, Callable[[Mapping[str, Mapping[str, Any]]], dict[str, dict[str, Any]]]]
] = {
    MEMBERSHIPS.name: (ASSIGNMENTS, assignments),
}
