"""Realistic delivery bodies for every trigger the sandbox can emit, from Cal.com's examples.

Each template in ``templates/`` is one of Cal.com's example bodies. ``build_body`` fills it
for a real sandbox user and event type: fresh booking id, uid and times, the organizer's
id, name, email, username and time zone (with the matching ``utcOffset``), the
organization's booker URL, and then applies caller overrides (merged into ``payload``, or
into the body itself for the flat MEETING_* bodies).

Shapes per FACTS §5: ``{"triggerEvent", "createdAt", "payload"}`` for most triggers;
MEETING_STARTED/MEETING_ENDED are flat booking rows; FORM_SUBMITTED repeats each answer at
the top level; OOO_CREATED describes a real OOO entry; PING is the dashboard's test body.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calhooks.service.calcom.webhooks import utc_timestamp
from calhooks.service.sandbox.state import EventType, Organization, OutOfOffice, Store, User

_ALPHANUMERIC = string.ascii_letters + string.digits
_BOOKING_TRIGGERS = frozenset(
    {
        "BOOKING_CREATED",
        "BOOKING_REQUESTED",
        "BOOKING_RESCHEDULED",
        "BOOKING_CANCELLED",
        "BOOKING_REJECTED",
    }
)
_MEETING_TRIGGERS = frozenset({"MEETING_STARTED", "MEETING_ENDED"})
#: OOO reasons as Cal.com seeds them: id and emoji.
OOO_REASONS = {
    "unspecified": (1, "🕒"),
    "vacation": (2, "🏝️"),
    "travel": (3, "🛫"),
    "sick": (4, "🤒"),
    "public_holiday": (5, "📆"),
}


@cache
def _templates() -> Mapping[str, str]:
    folder = resources.files("calhooks.service.sandbox").joinpath("templates")
    return {
        entry.name.removesuffix(".json"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


def template(trigger: str) -> dict[str, Any]:
    """A fresh copy of Cal.com's example body for ``trigger``."""
    loaded: dict[str, Any] = json.loads(_templates()[trigger])
    return loaded


#: Triggers ``build_body`` can emit (PING is sent only as a test delivery).
SUPPORTED_TRIGGERS = tuple(sorted(_templates()))


@dataclass(frozen=True, slots=True)
class Attendee:
    name: str = "Sam Booker"
    email: str = "sam@client.example"
    time_zone: str = "Europe/London"
    locale: str = "en"


@dataclass(frozen=True, slots=True)
class Booking:
    """The booking a booking or meeting event is about."""

    id: int
    uid: str
    start: datetime
    end: datetime
    created: datetime
    event_type: EventType
    organizer: User
    org: Organization
    attendee: Attendee
    video_id: str

    @property
    def video_url(self) -> str:
        return f"https://app.cal.com/video/{self.video_id}"


def new_uid(length: int = 22) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def utc_offset(time_zone: str, moment: datetime) -> int:
    """Minutes east of UTC in ``time_zone`` at ``moment`` (0 for an unknown zone)."""
    try:
        offset = moment.astimezone(ZoneInfo(time_zone)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return 0
    return int(offset.total_seconds() // 60) if offset else 0


def _seconds(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: nested objects merge, anything else replaces."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def new_booking(
    store: Store,
    org: Organization,
    organizer: User,
    event_type: EventType,
    *,
    trigger: str,
    now: datetime,
    attendee: Attendee | None = None,
) -> Booking:
    """A booking for ``trigger``: upcoming for BOOKING_*, starting or just ended for MEETING_*."""
    length = timedelta(minutes=event_type.length)
    if trigger == "MEETING_STARTED":
        start = now.replace(second=0, microsecond=0)
    elif trigger == "MEETING_ENDED":
        start = now.replace(second=0, microsecond=0) - length
    else:
        start = now.replace(minute=0, second=0, microsecond=0) + timedelta(days=1, hours=1)
    return Booking(
        id=store.next_id("booking"),
        uid=new_uid(),
        start=start,
        end=start + length,
        created=now - timedelta(days=2),
        event_type=event_type,
        organizer=organizer,
        org=org,
        attendee=attendee or Attendee(),
        video_id=uuid.uuid4().hex[:20],
    )


def _organizer(user: User, start: datetime) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.display_name,
        "email": user.email,
        "username": user.username,
        "timeZone": user.time_zone,
        "timeFormat": "HH:mm" if user.fields.get("timeFormat") == 24 else "h:mma",
        "language": {"locale": user.fields.get("locale") or "en"},
        "utcOffset": utc_offset(user.time_zone, start),
    }


@dataclass(frozen=True, slots=True)
class Replaced:
    """The booking a reschedule replaced, as the reschedule's payload names it."""

    id: int
    uid: str
    start: datetime
    end: datetime
    by: str


def _booking_payload(
    payload: dict[str, Any], booking: Booking, trigger: str, replaced: Replaced | None = None
) -> dict[str, Any]:
    event_type, attendee, organizer = booking.event_type, booking.attendee, booking.organizer
    payload.update(
        bookerUrl=f"https://{booking.org.slug}.cal.com",
        type=event_type.slug,
        title=f"{event_type.title} between {organizer.display_name} and {attendee.name}",
        startTime=_seconds(booking.start),
        endTime=_seconds(booking.end),
        organizer=_organizer(organizer, booking.start),
        attendees=[
            {
                "name": attendee.name,
                "email": attendee.email,
                "timeZone": attendee.time_zone,
                "phoneNumber": None,
                "language": {"locale": attendee.locale},
                "utcOffset": utc_offset(attendee.time_zone, booking.start),
            }
        ],
        location=booking.video_url,
        eventTypeId=event_type.id,
        iCalUID=f"{booking.uid}@Cal.com",
        uid=booking.uid,
        eventTitle=event_type.title,
        length=event_type.length,
        bookingId=booking.id,
    )
    payload["responses"]["name"]["value"] = attendee.name
    payload["responses"]["email"]["value"] = attendee.email
    payload["videoCallData"].update(id=booking.video_id, url=booking.video_url)
    payload["metadata"]["videoCallUrl"] = booking.video_url
    if replaced is None and trigger == "BOOKING_RESCHEDULED":
        previous = booking.start - timedelta(days=2)
        replaced = Replaced(
            booking.id - 1 if booking.id > 1 else booking.id,
            new_uid(),
            previous,
            previous + (booking.end - booking.start),
            attendee.email,
        )
    if replaced is not None:
        payload.update(
            rescheduleId=replaced.id,
            rescheduleUid=replaced.uid,
            rescheduleStartTime=_seconds(replaced.start),
            rescheduleEndTime=_seconds(replaced.end),
            rescheduledBy=replaced.by,
        )
    if trigger == "BOOKING_CANCELLED":
        payload["cancelledBy"] = attendee.email
    return payload


def _meeting_body(body: dict[str, Any], booking: Booking) -> dict[str, Any]:
    organizer, attendee = booking.organizer, booking.attendee
    video = booking.video_url
    body.update(
        id=booking.id,
        uid=booking.uid,
        idempotencyKey=uuid.uuid4().hex,
        userId=organizer.id,
        userPrimaryEmail=organizer.email,
        eventTypeId=booking.event_type.id,
        title=f"{booking.event_type.title} between {organizer.display_name} and {attendee.name}",
        startTime=utc_timestamp(booking.start),
        endTime=utc_timestamp(booking.end),
        createdAt=utc_timestamp(booking.created),
        updatedAt=utc_timestamp(booking.created + timedelta(milliseconds=100)),
        iCalUID=f"{booking.uid}@Cal.com",
        user={
            "email": organizer.email,
            "name": organizer.display_name,
            "timeZone": organizer.time_zone,
            "username": organizer.username,
        },
    )
    body["responses"].update(name=attendee.name, email=attendee.email)
    body["metadata"]["videoCallUrl"] = video
    body["attendees"] = [
        {
            **body["attendees"][0],
            "id": booking.id * 10 + 1,
            "email": attendee.email,
            "name": attendee.name,
            "timeZone": attendee.time_zone,
            "locale": attendee.locale,
            "bookingId": booking.id,
        }
    ]
    for reference in body["references"]:
        reference.update(
            bookingId=booking.id,
            uid=booking.video_id,
            meetingId=booking.video_id,
            meetingUrl=video,
        )
    return body


def _form_body(
    body: dict[str, Any], org: Organization, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    payload = body["payload"]
    payload.update(formId=str(uuid.uuid4()), teamId=org.id)
    merge(payload, overrides)
    answers = {name: answer.get("value") for name, answer in payload.get("responses", {}).items()}
    # Legacy compatibility: Cal.com repeats each answer at the top level, before the envelope.
    return {
        **answers,
        "triggerEvent": body["triggerEvent"],
        "createdAt": body["createdAt"],
        "payload": payload,
    }


def booking_body(
    trigger: str,
    booking: Booking,
    now: datetime,
    overrides: Mapping[str, Any] | None = None,
    *,
    replaced: Replaced | None = None,
) -> dict[str, Any]:
    """A BOOKING_* or MEETING_* body about ``booking`` (``replaced``: the booking a
    reschedule - or a reschedule sent as BOOKING_REQUESTED - replaced).

    BOOKING_REJECTED has no example body: Cal.com's confirm handler
    (``packages/trpc/server/routers/viewer/bookings/confirm.handler.ts``) sends the same
    CalendarEvent + event type info with ``status: "REJECTED"`` and ``rejectionReason``, so
    it is the cancellation's example without the cancellation's own fields.
    """
    if trigger == "BOOKING_REJECTED":
        body = template("BOOKING_CANCELLED")
        body["triggerEvent"] = trigger
        for name in ("cancellationReason", "cancelledBy"):
            body["payload"].pop(name, None)
        body["payload"].update(status="REJECTED", rejectionReason=None, requiresConfirmation=True)
    else:
        body = template(trigger)
    if trigger in _MEETING_TRIGGERS:
        return merge(_meeting_body(body, booking), overrides or {})
    body["createdAt"] = utc_timestamp(now)
    if trigger == "BOOKING_NO_SHOW_UPDATED":
        body["payload"].update(
            message=f"{booking.attendee.email} marked as no-show",
            bookingUid=booking.uid,
            bookingId=booking.id,
            attendees=[{"email": booking.attendee.email, "noShow": True}],
        )
    else:
        _booking_payload(body["payload"], booking, trigger, replaced)
    merge(body["payload"], overrides or {})
    return body


def form_body(
    org: Organization, now: datetime, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A FORM_SUBMITTED body for a routing form of ``org``."""
    body = template("FORM_SUBMITTED")
    body["createdAt"] = utc_timestamp(now)
    return _form_body(body, org, overrides or {})


def _ooo_user(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        "id": user.id,
        "name": user.fields.get("name"),
        "username": user.username,
        "timeZone": user.time_zone,
        "email": user.email,
    }


def ooo_created_body(
    store: Store, entry: OutOfOffice, now: datetime, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The OOO_CREATED body Cal.com sends for ``entry``."""
    body = template("OOO_CREATED")
    body["createdAt"] = utc_timestamp(now)
    reason = entry.reason or "unspecified"
    reason_id, emoji = OOO_REASONS.get(reason, OOO_REASONS["unspecified"])
    body["payload"]["oooEntry"] = {
        "id": entry.id,
        "start": utc_timestamp(entry.start),
        "end": utc_timestamp(entry.end),
        "createdAt": utc_timestamp(entry.created_at),
        "updatedAt": utc_timestamp(entry.updated_at),
        "notes": entry.notes,
        "reason": {"emoji": emoji, "reason": reason},
        "reasonId": reason_id,
        "user": _ooo_user(store.users.get(entry.user_id)),
        "toUser": _ooo_user(store.users.get(entry.to_user_id)) if entry.to_user_id else None,
        "uuid": entry.uuid,
    }
    merge(body["payload"], overrides or {})
    return body
