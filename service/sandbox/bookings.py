"""The sandbox's booking lifecycle: each change of a stored booking and the trigger it sends.

A booking lives in ``Store.bookings`` (``BookingRecord``, by uid) and changes only here,
through the admin surface (``/_sandbox/bookings``) and ``calhooks sandbox emit``:

==============  ===========================  ============================================
change          booking(s) afterwards        trigger sent (payload status)
==============  ===========================  ============================================
create          new, ACCEPTED                BOOKING_CREATED (ACCEPTED)
request         new, PENDING                 BOOKING_REQUESTED (PENDING)
accept          PENDING -> ACCEPTED          BOOKING_CREATED (ACCEPTED), same uid
reject          PENDING -> REJECTED          BOOKING_REJECTED (REJECTED), same uid
reschedule      new uid ACCEPTED; the old    BOOKING_RESCHEDULED (ACCEPTED) about the new
                one CANCELLED, rescheduled   uid with ``rescheduleUid`` = the old uid (and
                                             rescheduleId/StartTime/EndTime/By); nothing
                                             about the old uid
reschedule      new uid PENDING; the old     BOOKING_REQUESTED (PENDING) with the same
(as request)    one CANCELLED, rescheduled   reschedule fields: Cal.com issue 21169 (the v2
                                             reschedule endpoint sends a request)
cancel          ACCEPTED/PENDING ->          BOOKING_CANCELLED (CANCELLED), with
                CANCELLED                    cancellationReason and cancelledBy
==============  ===========================  ============================================

What Cal.com sends on acceptance and refusal, from its source (calcom/cal.com):
``packages/features/bookings/lib/handleConfirmation.ts`` - run when an organizer confirms a
requested booking - updates it to ACCEPTED and sends ``BOOKING_CREATED`` (``status:
"ACCEPTED"``) to the BOOKING_CREATED subscribers (and BOOKING_PAID when paid);
``packages/trpc/server/routers/viewer/bookings/confirm.handler.ts`` on refusal updates the
booking to REJECTED and sends ``BOOKING_REJECTED`` (``status: REJECTED``, the evt with
``rejectionReason``). A reschedule is a new booking (``handleNewBooking.ts``): new uid,
``rescheduleUid`` naming the original, which ends cancelled with no BOOKING_CANCELLED of its
own (FACTS §5 and the BOOKING_RESCHEDULED example).

Invalid changes answer like Cal.com's guards: 404 for an unknown uid (or one of another
organization), 400 for a change the booking's status does not allow.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from calhooks.service.calcom.webhooks import utc_timestamp
from calhooks.service.sandbox import payloads
from calhooks.service.sandbox.errors import bad_request, not_found
from calhooks.service.sandbox.state import BookingRecord, Organization, Store, User

#: The changes, as the admin surface and the CLI name them.
CHANGES = ("create", "request", "accept", "reject", "reschedule", "cancel")
LIVE = frozenset({"ACCEPTED", "PENDING"})


@dataclass(frozen=True, slots=True)
class Change:
    """A booking change: the booking as it is now and the body to deliver for it."""

    booking: BookingRecord
    trigger: str
    body: dict[str, Any]


def _parse(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{field} is not an ISO-8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        raise bad_request(f"{field} needs a time zone (e.g. a trailing Z): {text!r}")
    return moment


def _times(
    start: str | None, end: str | None, default_start: datetime, length: timedelta
) -> tuple[datetime, datetime]:
    begins = _parse(start, "start") or default_start
    ends = _parse(end, "end") or begins + length
    if ends <= begins:
        raise bad_request("end must be after start")
    return begins, ends


def _view(store: Store, record: BookingRecord) -> payloads.Booking:
    organizer = store.users[record.organizer_id]
    kind = store.event_type_by_id(record.event_type_id)
    if kind is None:
        raise not_found(f"event type {record.event_type_id} not found")
    first = record.attendees[0]
    return payloads.Booking(
        id=record.id,
        uid=record.uid,
        start=record.start,
        end=record.end,
        created=record.created_at,
        event_type=kind,
        organizer=organizer,
        org=store.orgs[record.org_id],
        attendee=payloads.Attendee(
            name=first["name"],
            email=first["email"],
            time_zone=first["timeZone"],
            locale=first.get("locale", "en"),
        ),
        video_id=record.video_id,
    )


def _body(
    store: Store,
    trigger: str,
    record: BookingRecord,
    now: datetime,
    *,
    replaced: payloads.Replaced | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": record.status, "requiresConfirmation": record.requested}
    if record.status == "CANCELLED":
        fields["cancellationReason"] = record.cancellation_reason
        fields["cancelledBy"] = record.cancelled_by
    if record.status == "REJECTED":
        fields["rejectionReason"] = record.rejection_reason
    body = payloads.booking_body(
        trigger, _view(store, record), now, {**fields, **(overrides or {})}, replaced=replaced
    )
    return body


def booking(store: Store, org_id: int, uid: str) -> BookingRecord:
    """The organization's booking ``uid`` (404 otherwise)."""
    record = store.bookings.get(uid)
    if record is None or record.org_id != org_id:
        raise not_found(f"Booking with uid={uid} was not found in the database")
    return record


def create(
    store: Store,
    org: Organization,
    organizer: User,
    event_type: str,
    *,
    now: datetime,
    attendee: payloads.Attendee | None = None,
    start: str | None = None,
    end: str | None = None,
    pending: bool = False,
) -> Change:
    """A new booking: ACCEPTED with BOOKING_CREATED, or PENDING with BOOKING_REQUESTED."""
    kind = store.event_type(organizer, event_type)
    default_start = now.replace(minute=0, second=0, microsecond=0) + timedelta(days=1, hours=1)
    begins, ends = _times(start, end, default_start, timedelta(minutes=kind.length))
    person = attendee or payloads.Attendee()
    record = BookingRecord(
        id=store.next_id("booking"),
        uid=payloads.new_uid(),
        org_id=org.id,
        event_type_id=kind.id,
        organizer_id=organizer.id,
        attendees=[
            {
                "name": person.name,
                "email": person.email,
                "timeZone": person.time_zone,
                "locale": person.locale,
            }
        ],
        start=begins,
        end=ends,
        created_at=now,
        updated_at=now,
        status="PENDING" if pending else "ACCEPTED",
        requested=pending,
        video_id=uuid.uuid4().hex[:20],
    )
    store.bookings[record.uid] = record
    trigger = "BOOKING_REQUESTED" if pending else "BOOKING_CREATED"
    return Change(record, trigger, _body(store, trigger, record, now))


def _expect(record: BookingRecord, allowed: frozenset[str] | set[str], change: str) -> None:
    if record.status not in allowed:
        raise bad_request(
            f"cannot {change} booking {record.uid}: it is {record.status.lower()}"
            + (f" (rescheduled to {record.rescheduled_to})" if record.rescheduled_to else "")
        )


def accept(store: Store, record: BookingRecord, *, now: datetime) -> Change:
    """The organizer confirms a requested booking: BOOKING_CREATED, same uid."""
    _expect(record, {"PENDING"}, "accept")
    record.status, record.updated_at = "ACCEPTED", now
    return Change(record, "BOOKING_CREATED", _body(store, "BOOKING_CREATED", record, now))


def reject(
    store: Store, record: BookingRecord, *, now: datetime, reason: str | None = None
) -> Change:
    """The organizer refuses a requested booking: BOOKING_REJECTED, same uid."""
    _expect(record, {"PENDING"}, "reject")
    record.status, record.updated_at, record.rejection_reason = "REJECTED", now, reason
    return Change(record, "BOOKING_REJECTED", _body(store, "BOOKING_REJECTED", record, now))


def cancel(
    store: Store,
    record: BookingRecord,
    *,
    now: datetime,
    reason: str | None = None,
    by: str | None = None,
) -> Change:
    """The booking is cancelled: BOOKING_CANCELLED about its uid."""
    _expect(record, LIVE, "cancel")
    record.status, record.updated_at = "CANCELLED", now
    record.cancellation_reason = reason
    record.cancelled_by = by or record.attendees[0]["email"]
    return Change(record, "BOOKING_CANCELLED", _body(store, "BOOKING_CANCELLED", record, now))


def reschedule(
    store: Store,
    record: BookingRecord,
    *,
    now: datetime,
    start: str | None = None,
    end: str | None = None,
    by: str | None = None,
    as_request: bool = False,
) -> Change:
    """A new booking replaces ``record`` (new uid, new times), which ends cancelled.

    ``as_request``: the new booking is PENDING and announced with BOOKING_REQUESTED
    carrying the reschedule fields (Cal.com issue 21169). Default times: one day later.
    """
    _expect(record, LIVE, "reschedule")
    length = record.end - record.start
    begins, ends = _times(start, end, record.start + timedelta(days=1), length)
    who = by or record.attendees[0]["email"]
    new = BookingRecord(
        id=store.next_id("booking"),
        uid=payloads.new_uid(),
        org_id=record.org_id,
        event_type_id=record.event_type_id,
        organizer_id=record.organizer_id,
        attendees=[dict(a) for a in record.attendees],
        start=begins,
        end=ends,
        created_at=now,
        updated_at=now,
        status="PENDING" if as_request else "ACCEPTED",
        requested=as_request or record.requested,
        rescheduled_from=record.uid,
        rescheduled_by=who,
        video_id=record.video_id,
    )
    record.status, record.updated_at = "CANCELLED", now
    record.rescheduled, record.rescheduled_to = True, new.uid
    store.bookings[new.uid] = new
    replaced = payloads.Replaced(record.id, record.uid, record.start, record.end, who)
    trigger = "BOOKING_REQUESTED" if as_request else "BOOKING_RESCHEDULED"
    return Change(new, trigger, _body(store, trigger, new, now, replaced=replaced))


def describe(store: Store, record: BookingRecord) -> dict[str, Any]:
    """The booking for the admin surface (camelCase, times in UTC)."""
    kind = store.event_type_by_id(record.event_type_id)
    organizer = store.users.get(record.organizer_id)
    return {
        "id": record.id,
        "uid": record.uid,
        "orgId": record.org_id,
        "eventType": kind.slug if kind else None,
        "eventTypeId": record.event_type_id,
        "organizer": organizer.email if organizer else None,
        "attendees": [a["email"] for a in record.attendees],
        "start": utc_timestamp(record.start),
        "end": utc_timestamp(record.end),
        "status": record.status,
        "rescheduledFrom": record.rescheduled_from,
        "rescheduledTo": record.rescheduled_to,
        "createdAt": utc_timestamp(record.created_at),
        "updatedAt": utc_timestamp(record.updated_at),
    }
