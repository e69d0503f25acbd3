"""Organization users: list with Cal.com's filters, create (with membership), update, delete.

User fields are stored under Cal.com's output names; the input names are the same except
``weekday``, which Cal.com stores as ``weekStart``. Emails and usernames are lower-cased;
emails are unique across the sandbox, usernames within an organization.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from calhooks.service.sandbox import output
from calhooks.service.sandbox.errors import BAD_REQUEST, ApiError, conflict
from calhooks.service.sandbox.operations.base import Call, Result, operation, page
from calhooks.service.sandbox.state import Membership, Store, User, default_user_fields

#: Create-only inputs that shape the membership rather than the user.
_MEMBERSHIP_INPUTS = frozenset({"organizationRole", "autoAccept"})
_INPUT_TO_FIELD = {"weekday": "weekStart"}


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_fields(store: Store, org_id: int, body: Mapping[str, Any], user_id: int | None) -> None:
    if "timeZone" in body and body["timeZone"] not in _time_zones():
        message = "timeZone must be a valid IANA time zone"
        raise ApiError(
            400,
            BAD_REQUEST,
            message,
            {
                "errors": [
                    {
                        "property": "timeZone",
                        "value": body["timeZone"],
                        "constraints": {"isTimeZone": message},
                    }
                ]
            },
        )
    email = str(body.get("email", "")).lower()
    username = str(body.get("username", "")).lower()
    for other in store.users.values():
        if other.id == user_id:
            continue
        if email and other.email == email:
            raise conflict(f"Unique constraint failed on the fields: (`email`): {email} is taken")
        if username and other.org_id == org_id and other.username == username:
            raise conflict(
                f"Unique constraint failed on the fields: (`username`,`organizationId`): "
                f"{username} is taken"
            )


def _apply(user: User, body: Mapping[str, Any]) -> None:
    for name, value in body.items():
        if name in _MEMBERSHIP_INPUTS:
            continue
        if name in ("email", "username") and isinstance(value, str):
            value = value.lower()
        user.fields[_INPUT_TO_FIELD.get(name, name)] = value


def _free_username(store: Store, org_id: int, email: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", email.split("@")[0].lower()).strip("-") or "user"
    taken = {u.username for u in store.org_users(org_id)}
    candidate, number = base, 1
    while candidate in taken:
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def _has_options(
    store: Store, user: User, org_id: int, option_ids: list[str], operator: str
) -> bool:
    membership = store.membership_of(org_id, user.id)
    assigned = (
        {a.option_id for a in store.assignments.values() if a.member_id == membership.id}
        if membership
        else set()
    )
    wanted = set(option_ids)
    if operator == "OR":
        return bool(assigned & wanted)
    if operator == "NONE":
        return not assigned & wanted
    return wanted <= assigned


@operation("cal_organizations_users_controller_get_organizations_users")
def list_users(call: Call) -> Result:
    store, params = call.store, call.params
    rows = list(store.org_users(call.org.id))
    if "emails" in params:
        wanted = {email.lower() for email in params["emails"]}
        rows = [u for u in rows if u.email in wanted]
    if "assignedOptionIds" in params:
        operator = params.get("attributeQueryOperator", "AND")
        rows = [
            u
            for u in rows
            if _has_options(store, u, call.org.id, params["assignedOptionIds"], operator)
        ]
    if "teamIds" in params:
        teams = set(params["teamIds"])
        rows = [
            u
            for u in rows
            if any(m.user_id == u.id and m.team_id in teams for m in store.memberships.values())
        ]
    return Result([output.user(u) for u in page(rows, params)])


@operation("cal_organizations_users_controller_create_organization_user")
def create_user(call: Call) -> Result:
    store, body = call.store, call.body()
    _check_fields(store, call.org.id, body, None)
    user_id = store.next_id("user")
    user = User(
        user_id, call.org.id, store.next_id("profile"), call.now, default_user_fields(body["email"])
    )
    _apply(user, body)
    if not user.username:
        user.fields["username"] = _free_username(store, call.org.id, user.email)
    store.users[user.id] = user
    membership = Membership(
        store.next_id("membership"),
        user.id,
        call.org.id,
        role=body["organizationRole"],
        accepted=body["autoAccept"],
    )
    store.memberships[membership.id] = membership
    return Result(output.user(user))


@operation("cal_organizations_users_controller_update_organization_user")
def update_user(call: Call) -> Result:
    user = call.store.org_user(call.org.id, call.params["userId"])
    body = call.body()
    _check_fields(call.store, call.org.id, body, user.id)
    _apply(user, body)
    return Result(output.user(user))


@operation("cal_organizations_users_controller_delete_organization_user")
def delete_user(call: Call) -> Result:
    user = call.store.org_user(call.org.id, call.params["userId"])
    data = output.user(user)
    call.store.remove_user(user.id)
    return Result(data)
