"""The sandbox's starting data and the credentials other parts of calhooks can rely on.

Two organizations, each with its own API key, so tests can prove that two connections stay
apart: **Acme** (id 1: alice the admin, bob and carol; a ``department`` attribute with
three options, one assigned to each; a few event types; one upcoming OOO entry for carol)
and **Globex** (id 2: dave the admin, erin). Acme also manages one organization,
**Acme Labs** (id 3), with a key of its own, and owns a platform OAuth client.

``seed(store, people=False)`` (``calhooks sandbox --empty``) keeps the organizations, keys
and client but leaves out users, memberships, attributes, OOO entries and event types.

**Numbered organizations.** Tests and benchmarks of many organizations (one connection each)
add them with ``seed(store, organizations=N)`` (``calhooks sandbox --orgs``,
``create_app(organizations=N)``) or, on a running sandbox, ``add_organizations``
(``POST /_sandbox/organizations``): ``Org <id>`` (slug ``org-<id>``), ids from the store's
organization counter, each with an admin user ``org<id>-admin`` (unless ``people=False``)
and an API key of its own, ``organization_api_key(id)``, whose credential id in the request
log is ``key-org<id>``. Cal.com's rate limit is per key, so each has its own 120 a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from calhooks.service.sandbox.state import (
    ApiKey,
    Attribute,
    AttributeOption,
    EventType,
    Membership,
    OptionAssignment,
    Organization,
    OutOfOffice,
    PlatformClient,
    Store,
    User,
    default_user_fields,
)

SANDBOX_ORG_ID = 1
#: Acme's API key, owned by alice (organization ADMIN).
SANDBOX_API_KEY = "cal_test_sandbox_acme_admin_key"
#: Acme's API key owned by bob (MEMBER): allowed only the member operations.
SANDBOX_MEMBER_API_KEY = "cal_test_sandbox_acme_member_key"
#: Acme's platform OAuth client (``x-cal-client-id`` / ``x-cal-secret-key``).
SANDBOX_CLIENT_ID = "sandbox-acme-platform-client"
SANDBOX_CLIENT_SECRET = "sandbox-acme-platform-secret"  # noqa: S105 - a public fake

SECOND_ORG_ID = 2
#: Globex's API key, owned by dave (organization ADMIN).
SECOND_API_KEY = "cal_test_sandbox_globex_admin_key"

MANAGED_ORG_ID = 3
MANAGED_API_KEY = "cal_test_sandbox_acme_labs_key"

DEPARTMENT_ATTRIBUTE_ID = "cdepartmentattribute00001"


@dataclass(frozen=True)
class Person:
    id: int
    membership_id: int
    org_id: int
    username: str
    name: str
    time_zone: str
    role: str
    time_format: int = 12
    department: str | None = None


PEOPLE = (
    Person(
        101,
        11,
        SANDBOX_ORG_ID,
        "alice",
        "Alice Anders",
        "Europe/London",
        "ADMIN",
        24,
        "engineering",
    ),
    Person(102, 12, SANDBOX_ORG_ID, "bob", "Bob Brooks", "America/New_York", "MEMBER", 12, "sales"),
    Person(103, 13, SANDBOX_ORG_ID, "carol", "Carol Chen", "Asia/Tokyo", "MEMBER", 24, "support"),
    Person(201, 21, SECOND_ORG_ID, "dave", "Dave Diaz", "Europe/Berlin", "ADMIN", 24),
    Person(202, 22, SECOND_ORG_ID, "erin", "Erin Evans", "Europe/Paris", "MEMBER", 24),
)

_DOMAINS = {SANDBOX_ORG_ID: "acme.example", SECOND_ORG_ID: "globex.example"}
_DEPARTMENTS = (("engineering", "Engineering"), ("sales", "Sales"), ("support", "Support"))
_EVENT_TYPES = (
    ("30min", "30 Min Meeting", 30),
    ("60min", "60 Min Meeting", 60),
    ("time-off", "Time Off", 480),
)


def option_id(slug: str) -> str:
    """The seeded id of a ``department`` option (``engineering``, ``sales``, ``support``)."""
    return ("copt" + slug).ljust(25, "0")


def organization_api_key(org_id: int) -> str:
    """The API key of numbered organization ``org_id`` (a public fake, derived from the id)."""
    return f"cal_test_sandbox_org{org_id}_key"


def organization_key_id(org_id: int) -> str:
    """The credential id the request log names for ``organization_api_key(org_id)``."""
    return f"key-org{org_id}"


def add_organizations(
    store: Store, count: int, *, people: bool = True, now: datetime | None = None
) -> list[Organization]:
    """Add ``count`` numbered organizations, each with its API key (and admin user)."""
    now = now or datetime.now(UTC)
    added = []
    for _ in range(count):
        org_id = store.next_id("org")
        org = store.orgs[org_id] = Organization(org_id, f"Org {org_id}", f"org-{org_id}")
        admin = None
        if people:
            admin = store.next_id("user")
            fields = default_user_fields(f"admin@org-{org_id}.example")
            fields.update(username=f"org{org_id}-admin", name=f"Org {org_id} Admin", verified=True)
            joined = now - timedelta(days=30)
            store.users[admin] = User(admin, org_id, store.next_id("profile"), joined, fields)
            membership = store.next_id("membership")
            store.memberships[membership] = Membership(
                membership, admin, org_id, "ADMIN", accepted=True
            )
        key = organization_api_key(org_id)
        store.api_keys[key] = ApiKey(organization_key_id(org_id), key, org_id, admin)
        added.append(org)
    return added


def seed(
    store: Store, *, people: bool = True, organizations: int = 0, now: datetime | None = None
) -> None:
    """Fill an empty ``store`` with the sandbox's organizations, keys and (optionally) people,
    and ``organizations`` numbered organizations after them."""
    now = now or datetime.now(UTC)
    store.orgs[SANDBOX_ORG_ID] = Organization(SANDBOX_ORG_ID, "Acme", "acme")
    store.orgs[SECOND_ORG_ID] = Organization(SECOND_ORG_ID, "Globex", "globex")
    store.orgs[MANAGED_ORG_ID] = Organization(
        MANAGED_ORG_ID, "Acme Labs", "acme-labs", {"region": "eu"}, parent_id=SANDBOX_ORG_ID
    )
    keys = (
        ApiKey("key-acme-admin", SANDBOX_API_KEY, SANDBOX_ORG_ID, 101 if people else None),
        ApiKey(
            "key-acme-member",
            SANDBOX_MEMBER_API_KEY,
            SANDBOX_ORG_ID,
            102 if people else None,
            role="MEMBER",
        ),
        ApiKey("key-globex-admin", SECOND_API_KEY, SECOND_ORG_ID, 201 if people else None),
        ApiKey("key-acme-labs", MANAGED_API_KEY, MANAGED_ORG_ID),
    )
    store.api_keys.update({key.key: key for key in keys})
    store.clients[SANDBOX_CLIENT_ID] = PlatformClient(
        SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_ORG_ID, 101 if people else None
    )
    if people:
        _seed_people(store, now)
    add_organizations(store, organizations, people=people, now=now)


def _seed_people(store: Store, now: datetime) -> None:
    joined = now - timedelta(days=90)
    attribute = Attribute(
        DEPARTMENT_ATTRIBUTE_ID, SANDBOX_ORG_ID, "Department", "department", "SINGLE_SELECT"
    )
    store.attributes[attribute.id] = attribute
    for slug, value in _DEPARTMENTS:
        store.options[option_id(slug)] = AttributeOption(option_id(slug), attribute.id, value, slug)
    for person in PEOPLE:
        fields = default_user_fields(f"{person.username}@{_DOMAINS[person.org_id]}")
        fields.update(
            username=person.username,
            name=person.name,
            timeZone=person.time_zone,
            weekStart="Monday",
            timeFormat=person.time_format,
            emailVerified=joined,
            verified=True,
        )
        store.users[person.id] = User(person.id, person.org_id, 10000 + person.id, joined, fields)
        store.memberships[person.membership_id] = Membership(
            person.membership_id, person.id, person.org_id, person.role, accepted=True
        )
        if person.department:
            assignment_id = f"cassign{person.username}".ljust(25, "0")
            store.assignments[assignment_id] = OptionAssignment(
                assignment_id, person.membership_id, option_id(person.department)
            )
        for number, (slug, title, length) in enumerate(_EVENT_TYPES):
            event_type = EventType(person.id * 10 + number, person.id, slug, title, length)
            store.event_types[(person.id, slug)] = event_type
    first_day = datetime.combine(now.date() + timedelta(days=14), time(), tzinfo=UTC)
    store.ooo[301] = OutOfOffice(
        id=301,
        uuid="6f0b3c2e-8d1a-4b7e-9c55-1e2f3a4b5c6d",
        user_id=103,
        start=first_day,
        end=first_day + timedelta(days=5) - timedelta(milliseconds=1),
        created_at=now - timedelta(days=3),
        updated_at=now - timedelta(days=3),
        notes="Family trip",
        reason="vacation",
        to_user_id=102,
    )
