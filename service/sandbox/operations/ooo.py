"""Users' out-of-office entries. Creating one emits OOO_CREATED, as Cal.com does.

Cal.com stores whole days: ``start`` is truncated to 00:00:00.000Z and ``end`` extended to
23:59:59.999Z of their UTC days.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time
from typing import Any

from calhooks.service.sandbox import output
from calhooks.service.sandbox.errors import bad_request, not_found
from calhooks.service.sandbox.operations.base import Call, Result, operation, page
from calhooks.service.sandbox.payloads import ooo_created_body
from calhooks.service.sandbox.state import OutOfOffice, User, new_uuid

_END_OF_DAY = time(23, 59, 59, 999000)


def _parse(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise bad_request("Invalid Date.") from None


def day_start(text: str) -> datetime:
    return datetime.combine(_parse(text).date(), time(), tzinfo=UTC)


def day_end(text: str) -> datetime:
    return datetime.combine(_parse(text).date(), _END_OF_DAY, tzinfo=UTC)


def _sorted(entries: Sequence[OutOfOffice], params: dict[str, Any]) -> list[OutOfOffice]:
    rows = sorted(entries, key=lambda e: e.id)
    if "sortEnd" in params:
        rows.sort(key=lambda e: e.end, reverse=params["sortEnd"] == "desc")
    if "sortStart" in params:
        rows.sort(key=lambda e: e.start, reverse=params["sortStart"] == "desc")
    return rows


def _check_cover(call: Call, user: User, to_user_id: int | None) -> None:
    if to_user_id is None:
        return
    if to_user_id == user.id:
        raise bad_request("Cannot redirect to yourself: toUserId is the user's own id")
    cover = call.store.users.get(to_user_id)
    if cover is None or cover.org_id != call.org.id:
        raise bad_request(f"toUserId {to_user_id} is not a member of the organization")


def _entry(call: Call) -> tuple[User, OutOfOffice]:
    user = call.store.org_user(call.org.id, call.params["userId"])
    entry = call.store.ooo.get(call.params["oooId"])
    if entry is None or entry.user_id != user.id:
        raise not_found(f"Out of office entry with id {call.params['oooId']} not found")
    return user, entry


@operation("cal_organizations_users_ooocontroller_get_organization_user_ooo")
def list_user_ooo(call: Call) -> Result:
    user = call.store.org_user(call.org.id, call.params["userId"])
    entries = [e for e in call.store.ooo.values() if e.user_id == user.id]
    return Result([output.ooo(e) for e in page(_sorted(entries, dict(call.params)), call.params)])


@operation("cal_organizations_users_ooocontroller_get_organization_users_ooo")
def list_org_ooo(call: Call) -> Result:
    members = {u.id: u for u in call.store.org_users(call.org.id)}
    email = call.params.get("email")
    entries = [
        e
        for e in call.store.ooo.values()
        if e.user_id in members and (email is None or members[e.user_id].email == email.lower())
    ]
    return Result([output.ooo(e) for e in page(_sorted(entries, dict(call.params)), call.params)])


@operation("cal_organizations_users_ooocontroller_create_organization_user_ooo")
def create_ooo(call: Call) -> Result:
    user = call.store.org_user(call.org.id, call.params["userId"])
    body = call.body()
    start, end = day_start(body["start"]), day_end(body["end"])
    if end < start:
        raise bad_request("Start date must be before end date.")
    _check_cover(call, user, body.get("toUserId"))
    entry = OutOfOffice(
        id=call.store.next_id("ooo"),
        uuid=new_uuid(),
        user_id=user.id,
        start=start,
        end=end,
        created_at=call.now,
        updated_at=call.now,
        notes=body.get("notes"),
        reason=body.get("reason", "unspecified"),
        to_user_id=body.get("toUserId"),
    )
    call.store.ooo[entry.id] = entry
    call.events.emit(call.org.id, "OOO_CREATED", ooo_created_body(call.store, entry, call.now))
    return Result(output.ooo(entry))


@operation("cal_organizations_users_ooocontroller_update_organization_user_ooo")
def update_ooo(call: Call) -> Result:
    user, entry = _entry(call)
    body = call.body()
    start = day_start(body["start"]) if "start" in body else entry.start
    end = day_end(body["end"]) if "end" in body else entry.end
    if end < start:
        raise bad_request("Start date must be before end date.")
    if "toUserId" in body:
        _check_cover(call, user, body["toUserId"])
        entry.to_user_id = body["toUserId"]
    entry.start, entry.end = start, end
    entry.notes = body.get("notes", entry.notes)
    entry.reason = body.get("reason", entry.reason)
    entry.updated_at = call.now
    return Result(output.ooo(entry))


@operation("cal_organizations_users_ooocontroller_delete_organization_user_ooo")
def delete_ooo(call: Call) -> Result:
    _, entry = _entry(call)
    del call.store.ooo[entry.id]
    return Result(output.ooo(entry))
