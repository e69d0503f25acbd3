"""The names of the events reconciliation emits for changes Cal.com sends no webhook for.

Prefixed ``calhooks.`` so they cannot clash with a Cal.com trigger; the rules validator
accepts them in ``on:``. Missed bookings come back under Cal.com's own triggers instead.
"""

from __future__ import annotations

from calhooks.service.events import RECONCILE_SOURCE

PREFIX = "calhooks."
#: ``Event.source`` (and ``payload.source``) of every event reconciliation emits.
SOURCE = RECONCILE_SOURCE

MEMBERSHIP_CREATED = "calhooks.MEMBERSHIP_CREATED"
MEMBERSHIP_DELETED = "calhooks.MEMBERSHIP_DELETED"
MEMBERSHIP_ROLE_CHANGED = "calhooks.MEMBERSHIP_ROLE_CHANGED"
USER_CREATED = "calhooks.USER_CREATED"
USER_UPDATED = "calhooks.USER_UPDATED"
USER_DELETED = "calhooks.USER_DELETED"
OOO_CREATED = "calhooks.OOO_CREATED"
OOO_UPDATED = "calhooks.OOO_UPDATED"
OOO_DELETED = "calhooks.OOO_DELETED"
WEBHOOK_CHANGED = "calhooks.WEBHOOK_CHANGED"
ATTRIBUTE_OPTION_ASSIGNED = "calhooks.ATTRIBUTE_OPTION_ASSIGNED"
ATTRIBUTE_OPTION_UNASSIGNED = "calhooks.ATTRIBUTE_OPTION_UNASSIGNED"

#: Every ``calhooks.*`` trigger, in the order the docs list them.
RECONCILE_TRIGGERS: tuple[str, ...] = (
    MEMBERSHIP_CREATED,
    MEMBERSHIP_DELETED,
    MEMBERSHIP_ROLE_CHANGED,
    USER_CREATED,
    USER_UPDATED,
    USER_DELETED,
    OOO_CREATED,
    OOO_UPDATED,
    OOO_DELETED,
    WEBHOOK_CHANGED,
    ATTRIBUTE_OPTION_ASSIGNED,
    ATTRIBUTE_OPTION_UNASSIGNED,
)
