"""Find what an interrupted create may already have made, before making it again.

A create (POST) interrupted between reaching Cal.com and being recorded in the ledger may or
may not have happened. Before calling it again, the ledger asks the finder registered here
for that tool to look the entity up with a list tool and match it on the fields that
identify it. A finder returns the entity (shaped like the create's answer) or ``None``.

| create tool | looked up with | matched on |
|---|---|---|
| OOO entry | the user's OOO entries | start day, end day, notes, reason, toUserId |
| webhook | the org's webhooks | subscriberUrl and the set of triggers |
| attribute | the org's attributes | slug (else name) |
| attribute option | the attribute's options | slug (else value) |
| membership | the org's memberships | userId |
| user | users filtered by email | email (case-insensitive) |
| managed organization | managed orgs filtered by slug | slug (else name) |

Assigning an attribute option to a user and creating a delegation credential have no list
tool to look them up with; for those (and as a second guard for every create) a repeated
create that Cal.com answers with 409 Conflict counts as done (see ``calhooks.workers.ledger``).

Cal.com keeps OOO days, not instants: it moves ``start`` to 00:00:00.000Z and ``end`` to
23:59:59.999Z of their days, so entries are matched on the UTC day of each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from calhooks.service.calcom.client import CalcomClient

Finder = Callable[[CalcomClient, Mapping[str, Any]], Awaitable[Any | None]]

CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
LIST_USER_OOO = "cal_organizations_users_ooocontroller_get_organization_user_ooo"
CREATE_WEBHOOK = "cal_organizations_webhooks_controller_create_organization_webhook"
LIST_WEBHOOKS = "cal_organizations_webhooks_controller_get_all_organization_webhooks"
CREATE_ATTRIBUTE = "cal_organizations_attributes_controller_create_organization_attribute"
LIST_ATTRIBUTES = "cal_organizations_attributes_controller_get_organization_attributes"
CREATE_OPTION = (
    "cal_organizations_attributes_options_controller_create_organization_attribute_option"
)
LIST_OPTIONS = "cal_organizations_attributes_options_controller_get_organization_attribute_options"
CREATE_MEMBERSHIP = "cal_organizations_memberships_controller_create_membership"
LIST_MEMBERSHIPS = "cal_organizations_memberships_controller_get_all_memberships"
CREATE_USER = "cal_organizations_users_controller_create_organization_user"
LIST_USERS = "cal_organizations_users_controller_get_organizations_users"
CREATE_MANAGED_ORG = "cal_organizations_controller_create_organization"
LIST_MANAGED_ORGS = "cal_organizations_controller_get_organizations"


def _pick(params: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {name: params[name] for name in names if params.get(name) is not None}


async def _first(
    client: CalcomClient,
    tool: str,
    params: Mapping[str, Any],
    matches: Callable[[Mapping[str, Any]], bool],
) -> Any | None:
    async for item in client.paginate(tool, **params):
        if isinstance(item, Mapping) and matches(item):
            return item
    return None


async def _first_unpaginated(
    client: CalcomClient,
    tool: str,
    params: Mapping[str, Any],
    matches: Callable[[Mapping[str, Any]], bool],
) -> Any | None:
    items = await client.call(tool, **params)
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and matches(item):
            return item
    return None


def _day(value: Any) -> str | None:
    return value[:10] if isinstance(value, str) and len(value) >= 10 else None


def _same(left: Any, right: Any) -> bool:
    """Equal, with ``None`` and ``""`` both meaning "not set"."""
    return (left or None) == (right or None)


async def find_ooo(client: CalcomClient, params: Mapping[str, Any]) -> Any | None:
    def matches(entry: Mapping[str, Any]) -> bool:
        return (
            _day(entry.get("start")) == _day(params.get("start"))
            and _day(entry.get("end")) == _day(params.get("end"))
            and _same(entry.get("notes"), params.get("notes"))
            and _same(entry.get("reason") or "unspecified", params.get("reason") or "unspecified")
            and _same(entry.get("toUserId"), params.get("toUserId"))
        )

    return await _first(client, LIST_USER_OOO, _pick(params, "orgId", "userId"), matches)


async def find_webhook(client: CalcomClient, params: Mapping[str, Any]) -> Any | None:
    wanted = set(params.get("triggers") or ())

    def matches(hook: Mapping[str, Any]) -> bool:
        return (
            hook.get("subscriberUrl") == params.get("subscriberUrl")
            and set(hook.get("triggers") or ()) == wanted
        )

    return await _first(client, LIST_WEBHOOKS, _pick(params, "orgId"), matches)


def _by_slug_or(field: str, params: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    if params.get("slug"):
        return lambda item: item.get("slug") == params["slug"]
    return lambda item: item.get(field) == params.get(field)


async def find_attribute(client: CalcomClient, params: Mapping[str, Any]) -> Any | None:
    return await _first(
        client, LIST_ATTRIBUTES, _pick(params, "orgId"), _by_slug_or("name", params)
    )


async def find_attribute_option(client: CalcomClient, params: Mapping[str, Any]) -> Any | None:
    return await _first_unpaginated(
        client, LIST_OPTIONS, _pick(params, "orgId", "attributeId"), _by_slug_or("value", params)
    )


async def find_membership(client: CalcomClient, params: Mapping[str, Any]) -> Any | None:
    return await _first(
        client,
        LIST_MEMBERSHIPS,
        _pick(params, "orgId"),
        lambda membership: membership.get("userId") == params.get("userId"),
    )


async def find_user(client: CalcomClient, params: Mapping[str, Any]) -> Any | None:
    email = str(params.get("email", "")).lower()
    return await _first(
        client,
        LIST_USERS,
        {**_pick(params, "orgId"), "emails": [email]},
        lambda user: str(user.get("email", "")).lower() == email,
    )


async def find_managed_org(client: CalcomClient, params: Mapping[str, Any]) -> Any | None:
    return await _first(
        client, LIST_MANAGED_ORGS, _pick(params, "orgId", "slug"), _by_slug_or("name", params)
    )


FINDERS: Mapping[str, Finder] = {
    CREATE_OOO: find_ooo,
    CREATE_WEBHOOK: find_webhook,
    CREATE_ATTRIBUTE: find_attribute,
    CREATE_OPTION: find_attribute_option,
    CREATE_MEMBERSHIP: find_membership,
    CREATE_USER: find_user,
    CREATE_MANAGED_ORG: find_managed_org,
}
