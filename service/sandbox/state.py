"""The sandbox's in-memory data: Cal.com's entities behind the 37 operations, and their ids.

One ``Store`` per sandbox holds organizations (top-level and managed), API keys and platform
clients, users with their organization profile, memberships, attributes with options and
user assignments, out-of-office entries, webhooks, delegation credentials, the event
types the admin surface books against and the bookings made there (``BookingRecord``, by
uid; ``calhooks.service.sandbox.bookings`` changes them). Integer ids come from per-kind
counters; string ids look like Cal.com's (cuid for attributes and options, UUID for webhooks).

Everything runs on the server's event loop; nothing here awaits, so a handler's changes
are atomic with respect to other requests.
"""

from __future__ import annotations

import itertools
import secrets
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from calhooks.service.sandbox.errors import not_found

ADMIN_ROLES = frozenset({"ADMIN", "OWNER"})

_CUID_ALPHABET = string.ascii_lowercase + string.digits

#: First id handed out per kind, above the seeded ids so seeds and new rows never collide.
_FIRST_IDS = {
    "org": 1001,
    "user": 1001,
    "profile": 5001,
    "membership": 1001,
    "ooo": 1001,
    "booking": 90001,
    "event_type": 7001,
    "api_key": 1001,
}


def new_cuid() -> str:
    """A 25-character id shaped like Prisma's ``cuid()`` (``c`` + 24 lowercase/digits)."""
    return "c" + "".join(secrets.choice(_CUID_ALPHABET) for _ in range(24))


def new_uuid() -> str:
    return str(uuid.uuid4())


@dataclass
class Organization:
    id: int
    name: str
    slug: str
    metadata: dict[str, Any] | None = None
    #: The organization managing this one (managed organizations), else ``None``.
    parent_id: int | None = None


@dataclass
class ApiKey:
    id: str
    key: str
    org_id: int
    #: The user the key belongs to; their membership gives the role. ``None``: ``role`` applies.
    user_id: int | None = None
    role: str = "ADMIN"


@dataclass
class PlatformClient:
    id: str
    secret: str
    org_id: int
    user_id: int | None = None


@dataclass
class User:
    """A user and their organization profile; ``fields`` are keyed by Cal.com's output names."""

    id: int
    org_id: int
    profile_id: int
    created_date: datetime
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def email(self) -> str:
        return str(self.fields["email"])

    @property
    def username(self) -> str | None:
        value = self.fields.get("username")
        return str(value) if value is not None else None

    @property
    def display_name(self) -> str:
        return str(self.fields.get("name") or self.username or self.email.split("@")[0])

    @property
    def time_zone(self) -> str:
        return str(self.fields.get("timeZone") or "Europe/London")


@dataclass
class Membership:
    id: int
    user_id: int
    team_id: int
    role: str = "MEMBER"
    accepted: bool = False
    disable_impersonation: bool = False


@dataclass
class Attribute:
    id: str
    team_id: int
    name: str
    slug: str
    type: str
    enabled: bool = True
    users_can_edit_relation: bool = True


@dataclass
class AttributeOption:
    id: str
    attribute_id: str
    value: str
    slug: str


@dataclass
class OptionAssignment:
    id: str
    member_id: int
    option_id: str


@dataclass
class OutOfOffice:
    id: int
    uuid: str
    user_id: int
    start: datetime
    end: datetime
    created_at: datetime
    updated_at: datetime
    notes: str | None = None
    reason: str | None = "unspecified"
    to_user_id: int | None = None


@dataclass
class Webhook:
    id: str
    team_id: int
    subscriber_url: str
    active: bool
    triggers: list[str]
    payload_template: str | None = None
    secret: str | None = None
    version: str = "2021-10-20"


@dataclass
class DelegationCredential:
    id: str
    org_id: int
    domain: str
    platform_slug: str
    service_account_key: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    enabled: bool = False


@dataclass
class EventType:
    id: int
    user_id: int
    slug: str
    title: str
    length: int


#: A booking's status as Cal.com stores it (``BookingStatus``); the API lowercases it.


@dataclass
class BookingRecord:
    """One booking of an organization member, as the sandbox keeps it.

    ``rescheduled_from`` is the uid of the booking this one replaced (Cal.com's
    ``fromReschedule``); the replaced booking keeps ``rescheduled_to`` and ends CANCELLED
    with ``rescheduled`` set, as in Cal.com.
    """

    id: int
    uid: str
    org_id: int
    event_type_id: int
    organizer_id: int
    attendees: list[dict[str, Any]]
    start: datetime
    end: datetime
    created_at: datetime
    updated_at: datetime
    status: str = "ACCEPTED"
    #: Made by a request (its event type requires confirmation).
    requested: bool = False
    rescheduled_from: str | None = None
    rescheduled_to: str | None = None
    rescheduled: bool = False
    rescheduled_by: str | None = None
    cancellation_reason: str | None = None
    cancelled_by: str | None = None
    rejection_reason: str | None = None
    video_id: str = ""


@dataclass(frozen=True)
class WorkspacePlatform:
    name: str
    slug: str
    #: The service-account key field that tells this platform's keys apart.
    key_field: str


WORKSPACE_PLATFORMS = {
    "google": WorkspacePlatform("Google", "google", "client_email"),
    "office365": WorkspacePlatform("Microsoft 365", "office365", "tenant_id"),
}


def default_user_fields(email: str) -> dict[str, Any]:
    """A new user's profile as Cal.com fills it when only the email is given."""
    return {
        "email": email.lower(),
        "username": None,
        "name": None,
        "emailVerified": None,
        "bio": None,
        "avatarUrl": None,
        "timeZone": "Europe/London",
        "weekStart": "Sunday",
        "appTheme": None,
        "theme": None,
        "defaultScheduleId": None,
        "locale": "en",
        "timeFormat": 12,
        "hideBranding": False,
        "brandColor": "#292929",
        "darkBrandColor": "#fafafa",
        "allowDynamicBooking": True,
        "verified": False,
        "invitedTo": None,
        "metadata": {},
    }


class Store:
    """Every entity of one sandbox, by id."""

    def __init__(self) -> None:
        self.orgs: dict[int, Organization] = {}
        self.api_keys: dict[str, ApiKey] = {}
        self.clients: dict[str, PlatformClient] = {}
        self.users: dict[int, User] = {}
        self.memberships: dict[int, Membership] = {}
        self.attributes: dict[str, Attribute] = {}
        self.options: dict[str, AttributeOption] = {}
        self.assignments: dict[str, OptionAssignment] = {}
        self.ooo: dict[int, OutOfOffice] = {}
        self.webhooks: dict[str, Webhook] = {}
        self.credentials: dict[str, DelegationCredential] = {}
        self.event_types: dict[tuple[int, str], EventType] = {}
        self.bookings: dict[str, BookingRecord] = {}
        self._counters = {kind: itertools.count(start) for kind, start in _FIRST_IDS.items()}

    def next_id(self, kind: str) -> int:
        return next(self._counters[kind])

    # Lookups that answer 404 the way Cal.com's guards and services do.

    def org_user(self, org_id: int, user_id: int) -> User:
        user = self.users.get(user_id)
        if user is None or user.org_id != org_id:
            raise not_found(f"User with id {user_id} is not part of the organization {org_id}")
        return user

    def membership_of(self, team_id: int, user_id: int) -> Membership | None:
        for membership in self.memberships.values():
            if membership.team_id == team_id and membership.user_id == user_id:
                return membership
        return None

    def org_attribute(self, org_id: int, attribute_id: str) -> Attribute:
        attribute = self.attributes.get(attribute_id)
        if attribute is None or attribute.team_id != org_id:
            raise not_found(f"Attribute with id {attribute_id} not found")
        return attribute

    def options_of(self, attribute_id: str) -> Iterator[AttributeOption]:
        return (o for o in self.options.values() if o.attribute_id == attribute_id)

    def org_users(self, org_id: int) -> Iterator[User]:
        return (u for u in self.users.values() if u.org_id == org_id)

    def managed_by(self, parent_id: int) -> Iterator[Organization]:
        return (o for o in self.orgs.values() if o.parent_id == parent_id)

    def find_user(self, ref: str | int, org_id: int | None = None) -> User | None:
        """A user by id, username or email (case-insensitive), optionally within one org."""
        text = str(ref).strip().lower()
        for user in self.users.values():
            if org_id is not None and user.org_id != org_id:
                continue
            if text in {str(user.id), (user.username or "").lower(), user.email.lower()}:
                return user
        return None

    def event_type(self, user: User, slug: str) -> EventType:
        """The user's event type ``slug``, created on first use (title from the slug)."""
        key = (user.id, slug)
        if key not in self.event_types:
            title = slug.replace("-", " ").replace("_", " ").strip().title() or "Meeting"
            self.event_types[key] = EventType(self.next_id("event_type"), user.id, slug, title, 30)
        return self.event_types[key]

    def event_type_by_id(self, event_type_id: int) -> EventType | None:
        return next((t for t in self.event_types.values() if t.id == event_type_id), None)

    def org_bookings(self, org_id: int) -> Iterator[BookingRecord]:
        return (b for b in self.bookings.values() if b.org_id == org_id)

    def remove_user(self, user_id: int) -> None:
        """Drop a user with their memberships, option assignments, OOO entries and bookings."""
        self.users.pop(user_id, None)
        member_ids = {m.id for m in self.memberships.values() if m.user_id == user_id}
        self._drop_memberships(member_ids)
        for entry_id in [e.id for e in self.ooo.values() if e.user_id == user_id]:
            del self.ooo[entry_id]
        for entry in self.ooo.values():
            if entry.to_user_id == user_id:
                entry.to_user_id = None
        for uid in [b.uid for b in self.bookings.values() if b.organizer_id == user_id]:
            del self.bookings[uid]

    def remove_membership(self, membership_id: int) -> None:
        self._drop_memberships({membership_id})

    def _drop_memberships(self, member_ids: set[int]) -> None:
        for member_id in member_ids:
            self.memberships.pop(member_id, None)
        for assignment_id in [a.id for a in self.assignments.values() if a.member_id in member_ids]:
            del self.assignments[assignment_id]

    def remove_attribute(self, attribute_id: str) -> None:
        self.attributes.pop(attribute_id, None)
        for option_id in [o.id for o in self.options_of(attribute_id)]:
            self.remove_option(option_id)

    def remove_option(self, option_id: str) -> None:
        self.options.pop(option_id, None)
        for assignment_id in [a.id for a in self.assignments.values() if a.option_id == option_id]:
            del self.assignments[assignment_id]

    def remove_org(self, org_id: int) -> None:
        """Drop an organization and everything scoped to it (managed orgs included)."""
        for child in list(self.managed_by(org_id)):
            self.remove_org(child.id)
        self.orgs.pop(org_id, None)
        for user in list(self.org_users(org_id)):
            self.remove_user(user.id)
        self._drop_memberships({m.id for m in self.memberships.values() if m.team_id == org_id})
        for attribute in [a for a in self.attributes.values() if a.team_id == org_id]:
            self.remove_attribute(attribute.id)
        for webhook_id in [w.id for w in self.webhooks.values() if w.team_id == org_id]:
            del self.webhooks[webhook_id]
        for credential_id in [c.id for c in self.credentials.values() if c.org_id == org_id]:
            del self.credentials[credential_id]
        for key in [k for k, v in self.api_keys.items() if v.org_id == org_id]:
            del self.api_keys[key]
        for client_id in [k for k, v in self.clients.items() if v.org_id == org_id]:
            del self.clients[client_id]
