"""Cal.com's output DTOs: what each entity looks like in a response's ``data``.

Field names, types and nullability follow the output DTOs (and so each tool's
``response_schema``): optional fields the DTO types as plain strings are left out when
unset rather than sent as ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from calhooks.service.calcom.webhooks import utc_timestamp
from calhooks.service.sandbox.state import (
    WORKSPACE_PLATFORMS,
    Attribute,
    AttributeOption,
    DelegationCredential,
    Membership,
    OptionAssignment,
    Organization,
    OutOfOffice,
    Store,
    User,
    Webhook,
)

#: Membership attribute ``type`` as the membership output service names it.
_MEMBERSHIP_ATTRIBUTE_TYPES = {
    "TEXT": "text",
    "NUMBER": "number",
    "SINGLE_SELECT": "singleSelect",
    "MULTI_SELECT": "multiSelect",
}


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _json_value(value: Any) -> Any:
    return utc_timestamp(value) if isinstance(value, datetime) else value


def attribute(row: Attribute) -> dict[str, Any]:
    return {
        "id": row.id,
        "teamId": row.team_id,
        "type": row.type,
        "name": row.name,
        "slug": row.slug,
        "enabled": row.enabled,
        "usersCanEditRelation": row.users_can_edit_relation,
    }


def option(row: AttributeOption) -> dict[str, Any]:
    return {"id": row.id, "attributeId": row.attribute_id, "value": row.value, "slug": row.slug}


def assignment(row: OptionAssignment) -> dict[str, Any]:
    return {"id": row.id, "memberId": row.member_id, "attributeOptionId": row.option_id}


def managed_org(row: Organization) -> dict[str, Any]:
    return _present({"id": row.id, "name": row.name, "slug": row.slug, "metadata": row.metadata})


def user(row: User) -> dict[str, Any]:
    data: dict[str, Any] = {"id": row.id}
    data.update({key: _json_value(value) for key, value in row.fields.items()})
    data["createdDate"] = utc_timestamp(row.created_date)
    if data.get("metadata") is None:
        data.pop("metadata", None)
    data["profile"] = {
        "id": row.profile_id,
        "organizationId": row.org_id,
        "userId": row.id,
        "username": row.username,
    }
    return data


def membership(store: Store, row: Membership) -> dict[str, Any]:
    member = store.users.get(row.user_id)
    fields = member.fields if member else {}
    return {
        "id": row.id,
        "userId": row.user_id,
        "teamId": row.team_id,
        "accepted": row.accepted,
        "role": row.role,
        "disableImpersonation": row.disable_impersonation,
        "user": _present(
            {
                "email": fields.get("email", ""),
                "username": fields.get("username"),
                "name": fields.get("name"),
                "avatarUrl": fields.get("avatarUrl"),
                "bio": fields.get("bio"),
                "metadata": fields.get("metadata"),
            }
        ),
        "attributes": membership_attributes(store, row),
    }


def membership_attributes(store: Store, row: Membership) -> list[dict[str, Any]]:
    """The member's assigned options grouped by attribute, shaped per attribute type."""
    grouped: dict[str, list[AttributeOption]] = {}
    for assigned in store.assignments.values():
        if assigned.member_id != row.id or assigned.option_id not in store.options:
            continue
        chosen = store.options[assigned.option_id]
        grouped.setdefault(chosen.attribute_id, []).append(chosen)
    output: list[dict[str, Any]] = []
    for attribute_id, chosen_options in grouped.items():
        owner = store.attributes.get(attribute_id)
        if owner is None:
            continue
        kind = _MEMBERSHIP_ATTRIBUTE_TYPES[owner.type]
        base: dict[str, Any] = {"id": owner.id, "name": owner.name, "type": kind}
        if owner.type == "MULTI_SELECT":
            base["options"] = [{"optionId": o.id, "option": o.value} for o in chosen_options]
        else:
            first = chosen_options[0]
            value: str | float = first.value
            if owner.type == "NUMBER":
                try:
                    value = float(first.value)
                    value = int(value) if value.is_integer() else value
                except ValueError:
                    value = first.value
            base.update(optionId=first.id, option=value)
        output.append(base)
    return output


def ooo(row: OutOfOffice) -> dict[str, Any]:
    return {
        "id": row.id,
        "uuid": row.uuid,
        "userId": row.user_id,
        "toUserId": row.to_user_id,
        "start": utc_timestamp(row.start),
        "end": utc_timestamp(row.end),
        "notes": row.notes,
        "reason": row.reason,
    }


def webhook(row: Webhook) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "teamId": row.team_id,
        "subscriberUrl": row.subscriber_url,
        "active": row.active,
        "triggers": list(row.triggers),
        "payloadTemplate": row.payload_template,
    }
    if row.secret is not None:
        data["secret"] = row.secret  # Cal.com returns the secret in clear text when set
    return data


def credential(row: DelegationCredential) -> dict[str, Any]:
    platform = WORKSPACE_PLATFORMS[row.platform_slug]
    return {
        "id": row.id,
        "enabled": row.enabled,
        "domain": row.domain,
        "organizationId": row.org_id,
        "workspacePlatform": {"name": platform.name, "slug": platform.slug},
        "createdAt": utc_timestamp(row.created_at),
        "updatedAt": utc_timestamp(row.updated_at),
    }
