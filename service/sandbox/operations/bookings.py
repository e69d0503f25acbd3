"""The organization's bookings (``GET /v2/organizations/{orgId}/bookings``), an internal
read-only operation of the registry (not one of the 37 tools), over ``Store.bookings``.

Answers Cal.com's ``GetBookingsOutput_2024_08_13``: ``BookingOutput_2024_08_13`` items
(status lowercased; ``rescheduledFromUid`` / ``rescheduledToUid`` link a reschedule's two
bookings) and ``PaginationMetaDto``. Filters: ``status`` (``upcoming``, ``past``,
``cancelled``, ``unconfirmed``; ``recurring`` matches nothing: the sandbox books no
recurring events), ``bookingUid``, ``attendeeEmail``, ``attendeeName``, ``userIds``,
``eventTypeId(s)``, ``afterStart``, ``beforeEnd``, ``after/beforeCreatedAt``,
``after/beforeUpdatedAt``; sorting by ``sortStart``, ``sortEnd``, ``sortCreated``,
``sortUpdatedAt``; ``take`` (default 100, at most 250) and ``skip``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from calhooks.service.calcom.tools import ORG_BOOKINGS
from calhooks.service.calcom.webhooks import utc_timestamp
from calhooks.service.sandbox.errors import bad_request
from calhooks.service.sandbox.operations.base import Call, Result, operation, page
from calhooks.service.sandbox.state import BookingRecord, Store

_DEFAULT_TAKE = 100


def _moment(params: Mapping[str, Any], name: str) -> datetime | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name} must be an ISO-8601 date string") from None


def _ids(params: Mapping[str, Any], *names: str) -> set[int]:
    found: set[int] = set()
    for name in names:
        value = params.get(name)
        if value is None:
            continue
        items = value if isinstance(value, list) else str(value).split(",")
        try:
            found |= {int(str(item).strip()) for item in items if str(item).strip()}
        except ValueError:
            raise bad_request(f"{name} must be comma-separated numbers") from None
    return found


def _status_matches(record: BookingRecord, wanted: list[str], now: datetime) -> bool:
    for status in wanted:
        live = record.status in ("ACCEPTED", "PENDING")
        if status == "upcoming" and live and record.end >= now:
            return True
        if status == "past" and live and record.end < now:
            return True
        if status == "cancelled" and record.status in ("CANCELLED", "REJECTED"):
            return True
        if status == "unconfirmed" and record.status == "PENDING" and record.end >= now:
            return True
    return False


def _bound(
    value_of: Callable[[BookingRecord], datetime], moment: datetime, after: bool
) -> Callable[[BookingRecord], bool]:
    if after:
        return lambda b: value_of(b) >= moment
    return lambda b: value_of(b) <= moment


def _filters(params: Mapping[str, Any], now: datetime) -> list[Callable[[BookingRecord], bool]]:
    checks: list[Callable[[BookingRecord], bool]] = []
    statuses = params.get("status")
    if statuses:
        wanted = statuses if isinstance(statuses, list) else str(statuses).split(",")
        checks.append(lambda b: _status_matches(b, [str(s) for s in wanted], now))
    uid = params.get("bookingUid")
    if uid:
        checks.append(lambda b: b.uid == uid)
    email = str(params.get("attendeeEmail") or "").lower()
    if email:
        checks.append(lambda b: any(a["email"].lower() == email for a in b.attendees))
    name = params.get("attendeeName")
    if name:
        checks.append(lambda b: any(a["name"] == name for a in b.attendees))
    if users := _ids(params, "userIds"):
        checks.append(lambda b: b.organizer_id in users)
    if kinds := _ids(params, "eventTypeId", "eventTypeIds"):
        checks.append(lambda b: b.event_type_id in kinds)
    bounds: list[tuple[str, Callable[[BookingRecord], datetime], bool]] = [
        ("afterStart", lambda b: b.start, True),
        ("beforeEnd", lambda b: b.end, False),
        ("afterCreatedAt", lambda b: b.created_at, True),
        ("beforeCreatedAt", lambda b: b.created_at, False),
        ("afterUpdatedAt", lambda b: b.updated_at, True),
        ("beforeUpdatedAt", lambda b: b.updated_at, False),
    ]
    for name, value_of, after in bounds:
        moment = _moment(params, name)
        if moment is None:
            continue
        checks.append(_bound(value_of, moment, after))
    return checks


def _sorted(records: list[BookingRecord], params: Mapping[str, Any]) -> list[BookingRecord]:
    keys: list[tuple[str, Callable[[BookingRecord], datetime]]] = [
        ("sortStart", lambda b: b.start),
        ("sortEnd", lambda b: b.end),
        ("sortCreated", lambda b: b.created_at),
        ("sortUpdatedAt", lambda b: b.updated_at),
    ]
    ordered = sorted(records, key=lambda b: (b.start, b.id))
    for name, key in keys:
        direction = params.get(name)
        if direction in ("asc", "desc"):
            ordered = sorted(records, key=key, reverse=direction == "desc")
            break
    return ordered


def booking_output(store: Store, record: BookingRecord) -> dict[str, Any]:
    """One ``BookingOutput_2024_08_13``."""
    organizer = store.users[record.organizer_id]
    kind = store.event_type_by_id(record.event_type_id)
    slug = kind.slug if kind else ""
    title = kind.title if kind else "Meeting"
    attendee = record.attendees[0]
    meeting = f"https://app.cal.com/video/{record.video_id}"
    out: dict[str, Any] = {
        "id": record.id,
        "uid": record.uid,
        "title": f"{title} between {organizer.display_name} and {attendee['name']}",
        "description": "",
        "hosts": [
            {
                "id": organizer.id,
                "name": organizer.display_name,
                "email": organizer.email,
                "username": organizer.username or "",
                "timeZone": organizer.time_zone,
            }
        ],
        "status": record.status.lower(),
        "start": utc_timestamp(record.start),
        "end": utc_timestamp(record.end),
        "duration": int((record.end - record.start).total_seconds() // 60),
        "eventTypeId": record.event_type_id,
        "eventType": {"id": record.event_type_id, "slug": slug},
        "meetingUrl": meeting,
        "location": meeting,
        "absentHost": False,
        "createdAt": utc_timestamp(record.created_at),
        "updatedAt": utc_timestamp(record.updated_at),
        "metadata": {"videoCallUrl": meeting},
        "icsUid": f"{record.uid}@Cal.com",
        "attendees": [
            {
                "name": a["name"],
                "email": a["email"],
                "timeZone": a["timeZone"],
                "language": a.get("locale", "en"),
                "absent": False,
            }
            for a in record.attendees
        ],
        "guests": [],
        "bookingFieldsResponses": {"name": attendee["name"], "email": attendee["email"]},
    }
    if record.cancellation_reason is not None:
        out["cancellationReason"] = record.cancellation_reason
    if record.status == "CANCELLED" and record.cancelled_by:
        out["cancelledByEmail"] = record.cancelled_by
    if record.rescheduled_from:
        out["rescheduledFromUid"] = record.rescheduled_from
    if record.rescheduled_by:
        out["rescheduledByEmail"] = record.rescheduled_by
    if record.rescheduled_to:
        out["rescheduledToUid"] = record.rescheduled_to
    return out


@operation(ORG_BOOKINGS)
def list_org_bookings(call: Call) -> Result:
    params = call.params
    checks = _filters(params, call.now)
    matching = [
        b for b in call.store.org_bookings(call.org.id) if all(check(b) for check in checks)
    ]
    ordered = _sorted(matching, params)
    take = min(int(params.get("take") or _DEFAULT_TAKE), 250)
    skip = int(params.get("skip") or 0)
    items = page(ordered, {"take": take, "skip": skip})
    total = len(ordered)
    pages = max(1, -(-total // take))
    current = skip // take + 1
    pagination = {
        "totalItems": total,
        "remainingItems": max(0, total - skip - len(items)),
        "returnedItems": len(items),
        "itemsPerPage": take,
        "currentPage": current,
        "totalPages": pages,
        "hasNextPage": skip + len(items) < total,
        "hasPreviousPage": skip > 0,
    }
    return Result([booking_output(call.store, b) for b in items], pagination)
