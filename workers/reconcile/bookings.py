"""Missed bookings: the trigger Cal.com would have sent for a booking change nobody received.

``webhook_payload`` maps an item of ``GET /v2/organizations/{orgId}/bookings``
(``BookingOutput_2024_08_13``) to the fields of Cal.com's booking webhook payload that rules
use: ``uid``, ``type`` (the event type's slug), ``title``, ``startTime``, ``endTime`` (to the
second, ``Z``, as webhooks write them),
``organizer`` (``id``, ``name``, ``email``, ``username``, ``timeZone``), ``attendees``
(``name``, ``email``, ``timeZone``, ``language``), ``status`` (upper case, as webhooks send
it), ``eventTypeId``, ``rescheduleUid`` for a booking made by a reschedule; plus
``rescheduledToUid`` and ``updatedAt`` (reconciliation's own bookkeeping) and, once emitted,
``source: "reconcile"``.

``missed`` compares a booking's previous snapshot with the current one and the workers'
booking record (``calhooks:booking:<uid>``: ``created`` once a creation was processed,
``ended`` once a cancellation, rejection or reschedule was):

* new and live, no creation processed: ``BOOKING_CREATED`` (``BOOKING_RESCHEDULED`` when
  made by a reschedule, ``BOOKING_REQUESTED`` when pending);
* pending before, accepted now: ``BOOKING_CREATED`` (the confirmation; the record cannot
  tell a processed request from a processed confirmation, so a delivered confirmation may
  be recovered once more - the example rules then update the entry they made, not add one);
* cancelled or rejected, not by a reschedule (its new booking's event covers it), no end
  processed, and live before or created as far as the workers know: ``BOOKING_CANCELLED``
  or ``BOOKING_REJECTED``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

LIVE = frozenset({"ACCEPTED", "PENDING"})


def webhook_time(value: Any) -> Any:
    """An API time (``2031-05-04T09:00:00.000Z``) as webhooks write it (``...09:00:00Z``)."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def webhook_payload(item: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook-shaped payload of one listed booking (see the module docstring)."""
    hosts = item.get("hosts") or [{}]
    host = hosts[0] if isinstance(hosts, list) and hosts else {}
    event_type = item.get("eventType") or {}
    payload: dict[str, Any] = {
        "uid": item["uid"],
        "type": event_type.get("slug", ""),
        "title": item.get("title", ""),
        "startTime": webhook_time(item.get("start")),
        "endTime": webhook_time(item.get("end")),
        "organizer": {
            "id": host.get("id"),
            "name": host.get("name"),
            "email": host.get("email"),
            "username": host.get("username"),
            "timeZone": host.get("timeZone"),
        },
        "attendees": [
            {
                "name": a.get("name"),
                "email": a.get("email"),
                "timeZone": a.get("timeZone"),
                "language": {"locale": a.get("language", "en")},
            }
            for a in item.get("attendees") or []
        ],
        "status": str(item.get("status", "")).upper(),
        "eventTypeId": item.get("eventTypeId"),
        "updatedAt": item.get("updatedAt"),
    }
    if item.get("rescheduledFromUid"):
        payload["rescheduleUid"] = item["rescheduledFromUid"]
    if item.get("rescheduledToUid"):
        payload["rescheduledToUid"] = item["rescheduledToUid"]
    return payload


def missed(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    record: Mapping[str, str],
) -> str | None:
    """The trigger to recover for a booking now ``after`` (see the module docstring)."""
    status = after.get("status")
    was = before.get("status") if before is not None else None
    if status in LIVE:
        if before is None:
            if "created" in record:
                return None
            if status == "PENDING":
                return "BOOKING_REQUESTED"
            return "BOOKING_RESCHEDULED" if after.get("rescheduleUid") else "BOOKING_CREATED"
        if was == "PENDING" and status == "ACCEPTED":
            return "BOOKING_CREATED"
        return None
    if status in ("CANCELLED", "REJECTED"):
        if after.get("rescheduledToUid") or "ended" in record:
            return None
        if was in LIVE or (was is None and "created" in record):
            return "BOOKING_CANCELLED" if status == "CANCELLED" else "BOOKING_REJECTED"
    return None
