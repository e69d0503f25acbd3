"""Delivery bodies built from Cal.com's examples for real sandbox users and event types."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS
from calhooks.service.sandbox import SUPPORTED_TRIGGERS
from calhooks.service.sandbox.payloads import (
    Attendee,
    booking_body,
    merge,
    new_booking,
    template,
    utc_offset,
)
from calhooks.service.sandbox.seed import seed
from calhooks.service.sandbox.state import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
NOW = datetime(2025, 10, 10, 9, 12, 44, 301000, tzinfo=UTC)


@pytest.fixture
def store() -> Store:
    seeded = Store()
    seed(seeded, now=NOW)
    return seeded


@pytest.mark.parametrize("name", SUPPORTED_TRIGGERS)
def test_templates_are_the_examples(name: str) -> None:
    """The packaged templates are Cal.com's example bodies, unchanged."""
    assert template(name) == json.loads((FIXTURES / f"{name}.json").read_text())


def test_supported_triggers_are_api_triggers() -> None:
    """Every trigger the sandbox emits is one a webhook can subscribe to."""
    assert set(SUPPORTED_TRIGGERS) <= set(WEBHOOK_TRIGGERS)
    assert "PING" not in SUPPORTED_TRIGGERS


@pytest.mark.parametrize(
    ("zone", "moment", "minutes"),
    [
        ("Europe/London", datetime(2025, 7, 1, tzinfo=UTC), 60),
        ("America/New_York", datetime(2025, 1, 15, tzinfo=UTC), -300),
        ("Asia/Kolkata", datetime(2025, 1, 15, tzinfo=UTC), 330),
        ("Not/AZone", datetime(2025, 1, 15, tzinfo=UTC), 0),
    ],
)
def test_utc_offset(zone: str, moment: datetime, minutes: int) -> None:
    assert utc_offset(zone, moment) == minutes


def test_merge_is_deep() -> None:
    """Objects merge key by key; anything else is replaced."""
    base = {"a": {"b": 1, "c": [1]}, "d": 1}
    assert merge(base, {"a": {"c": [2], "e": None}, "d": {"x": 1}}) == {
        "a": {"b": 1, "c": [2], "e": None},
        "d": {"x": 1},
    }


def test_booking_for_a_user_and_event_type(store: Store) -> None:
    """An upcoming booking of the user's event type, in their time zone."""
    bob = store.users[102]
    kind = store.event_type(bob, "60min")
    booking = new_booking(store, store.orgs[1], bob, kind, trigger="BOOKING_CREATED", now=NOW)
    payload = booking_body("BOOKING_CREATED", booking, NOW)["payload"]
    assert payload["startTime"] == "2025-10-11T10:00:00Z"
    assert payload["endTime"] == "2025-10-11T11:00:00Z"
    assert (payload["length"], payload["eventTypeId"], payload["type"]) == (60, kind.id, "60min")
    assert payload["organizer"]["timeZone"] == "America/New_York"
    assert payload["organizer"]["utcOffset"] == -240
    assert payload["organizer"]["timeFormat"] == "h:mma"
    assert payload["title"] == "60 Min Meeting between Bob Brooks and Sam Booker"
    assert payload["iCalUID"] == f"{payload['uid']}@Cal.com"
    assert payload["videoCallData"]["url"] == payload["location"] == booking.video_url


def test_unknown_event_type_is_made_up_from_its_slug(store: Store) -> None:
    """A new slug becomes an event type titled after it, kept for later events."""
    alice = store.users[101]
    made = store.event_type(alice, "quarterly-review")
    assert (made.title, made.length) == ("Quarterly Review", 30)
    assert store.event_type(alice, "quarterly-review") is made


def test_meeting_bodies_are_flat(store: Store) -> None:
    """MEETING_ENDED is the booking row itself, ending now, without a payload wrapper."""
    alice = store.users[101]
    booking = new_booking(
        store,
        store.orgs[1],
        alice,
        store.event_type(alice, "30min"),
        trigger="MEETING_ENDED",
        now=NOW,
        attendee=Attendee("Kim Lee", "kim@client.example", "Asia/Seoul"),
    )
    body = booking_body("MEETING_ENDED", booking, NOW)
    assert "payload" not in body
    assert body["triggerEvent"] == "MEETING_ENDED"
    assert body["endTime"] == "2025-10-10T09:12:00.000Z"
    assert body["startTime"] == "2025-10-10T08:42:00.000Z"
    assert (body["userId"], body["userPrimaryEmail"]) == (101, "alice@acme.example")
    assert body["attendees"][0]["email"] == "kim@client.example"
    assert body["responses"]["name"] == "Kim Lee"
    assert body["references"][0]["bookingId"] == body["id"] == booking.id


def test_rescheduled_points_at_the_original(store: Store) -> None:
    """A reschedule names the earlier booking's times and uid."""
    carol = store.users[103]
    booking = new_booking(
        store,
        store.orgs[1],
        carol,
        store.event_type(carol, "30min"),
        trigger="BOOKING_RESCHEDULED",
        now=NOW,
    )
    payload = booking_body("BOOKING_RESCHEDULED", booking, NOW)["payload"]
    previous = booking.start - timedelta(days=2)
    assert payload["rescheduleStartTime"] == previous.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert payload["rescheduleUid"] != payload["uid"]
    assert payload["rescheduledBy"] == "sam@client.example"
