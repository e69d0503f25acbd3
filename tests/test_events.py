"""Events: every known Cal.com body variant normalised into one shape, ids from raw bytes."""

from __future__ import annotations

import hashlib
import json

import pytest

from calhooks.service.events import (
    KNOWN_TRIGGERS,
    BodyError,
    Event,
    event_from_body,
    event_id,
    parse_body,
)
from tests.intake.conftest import FIXTURES, compact, fixture_body

ENVELOPE_TRIGGERS = [
    "BOOKING_CANCELLED",
    "BOOKING_CREATED",
    "BOOKING_NO_SHOW_UPDATED",
    "BOOKING_REQUESTED",
    "BOOKING_RESCHEDULED",
    "OOO_CREATED",
    "PING",
]


def test_every_fixture_is_covered() -> None:
    """The tests below name every example body there is."""
    names = {path.stem for path in FIXTURES.glob("*.json")}
    assert names == {*ENVELOPE_TRIGGERS, "FORM_SUBMITTED", "MEETING_STARTED", "MEETING_ENDED"}


@pytest.mark.parametrize("trigger", ENVELOPE_TRIGGERS)
def test_envelope_bodies(trigger: str) -> None:
    """{triggerEvent, createdAt, payload}: payload and createdAt are taken as they are."""
    raw = fixture_body(trigger)
    document = json.loads(raw)
    event = event_from_body(raw, received_at=1700000000.5)
    assert event == Event(
        id=hashlib.sha256(raw).hexdigest(),
        trigger=trigger,
        created_at=document["createdAt"],
        payload=document["payload"],
        raw=document,
        received_at=1700000000.5,
    )
    assert event.known


@pytest.mark.parametrize("trigger", ["MEETING_STARTED", "MEETING_ENDED"])
def test_flat_meeting_bodies(trigger: str) -> None:
    """Flat bodies: payload is the body minus triggerEvent; their createdAt is the booking's."""
    raw = fixture_body(trigger)
    document = json.loads(raw)
    event = event_from_body(raw, received_at=1.0)
    expected_payload = {k: v for k, v in document.items() if k != "triggerEvent"}
    assert (event.trigger, event.created_at, event.payload) == (trigger, None, expected_payload)
    assert event.payload["createdAt"] == document["createdAt"]  # the booking row's, kept
    assert event.payload["uid"] == "kQ3pZ7nR2sT8vW1xY4bC6d"
    assert event.raw == document


def test_form_submitted_keeps_top_level_copies_in_raw_only() -> None:
    """FORM_SUBMITTED: payload is the envelope's; the fields repeated at the top stay in raw."""
    raw = fixture_body("FORM_SUBMITTED")
    event = event_from_body(raw, received_at=1.0)
    assert event.created_at == "2025-10-10T10:01:22.007Z"
    assert set(event.payload) == {"formId", "formName", "teamId", "responses"}
    assert event.raw["company-size"] == "51-200"
    assert "company-size" not in event.payload


def test_unknown_triggers_are_events_too() -> None:
    """A trigger Cal.com does not document is normalised, not refused."""
    raw = compact({"triggerEvent": "DELEGATION_CREDENTIAL_ERROR", "payload": {"x": 1}})
    event = event_from_body(raw, received_at=1.0)
    assert (event.trigger, event.payload, event.created_at, event.known) == (
        "DELEGATION_CREDENTIAL_ERROR", {"x": 1}, None, False,
    )  # fmt: skip
    assert "DELEGATION_CREDENTIAL_ERROR" not in KNOWN_TRIGGERS


def test_payload_that_is_not_an_object_makes_a_flat_event() -> None:
    """A non-object payload is not lost: the event is flat, the payload key inside it."""
    raw = compact({"triggerEvent": "BOOKING_CREATED", "createdAt": "x", "payload": [1, 2]})
    event = event_from_body(raw, received_at=1.0)
    assert event.payload == {"createdAt": "x", "payload": [1, 2]}
    assert event.created_at is None


def test_id_is_sha256_of_exact_bytes() -> None:
    """Identical bytes, identical id; one byte of difference, another id."""
    raw = fixture_body("BOOKING_CREATED")
    assert event_id(raw) == hashlib.sha256(raw).hexdigest()
    assert event_id(raw) == event_from_body(raw, received_at=2.0).id
    assert event_id(raw + b" ") != event_id(raw)


def test_round_trip_through_dict_and_json() -> None:
    """to_dict is JSON-ready and from_dict restores an equal event."""
    event = event_from_body(fixture_body("FORM_SUBMITTED"), received_at=1.25)
    assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event
    of_a_connection = event_from_body(fixture_body("FORM_SUBMITTED"), received_at=1, connection="p")
    assert Event.from_dict(json.loads(json.dumps(of_a_connection.to_dict()))) == of_a_connection


def test_a_connections_delivery_has_its_own_id_and_keeps_its_connection() -> None:
    """The same bytes through two connections are two events; the default keeps the digest."""
    raw = fixture_body("BOOKING_CREATED")
    acme = event_from_body(raw, received_at=1.0, connection="pcid-acme")
    globex = event_from_body(raw, received_at=1.0, connection="pcid-globex")
    assert acme.id != globex.id != event_id(raw)
    assert acme.id == hashlib.sha256(b"pcid-acme\0" + raw).hexdigest()
    assert (acme.connection, acme.source) == ("pcid-acme", "webhook")


def test_format_1_events_read_as_the_environments_organization_from_a_webhook() -> None:
    """A job written before format 2 has no connection nor source: defaults, not an error."""
    event = event_from_body(fixture_body("BOOKING_CREATED"), received_at=1.0)
    old = {
        key: value for key, value in event.to_dict().items() if key not in ("connection", "source")
    }
    old["v"] = 1
    assert Event.from_dict(old) == event
    assert event.to_dict()["v"] == 2


@pytest.mark.parametrize("extra", [{"connection": 5}, {"source": None}, {"connection": ["p"]}])
def test_format_2_fields_are_checked(extra: dict[str, object]) -> None:
    data = {**event_from_body(fixture_body("PING"), received_at=1.0).to_dict(), **extra}
    with pytest.raises(ValueError, match="not an event"):
        Event.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"id": 1, "trigger": "X", "created_at": None, "payload": {}, "raw": {}, "received_at": 1},
        {"id": "a", "trigger": "X", "created_at": 5, "payload": {}, "raw": {}, "received_at": 1},
        {"id": "a", "trigger": "X", "created_at": None, "payload": [], "raw": {}, "received_at": 1},
        {
            "id": "a",
            "trigger": "X",
            "created_at": None,
            "payload": {},
            "raw": {},
            "received_at": "1",
        },
        {
            "id": "a",
            "trigger": "X",
            "created_at": None,
            "payload": {},
            "raw": {},
            "received_at": True,
        },
    ],
)
def test_from_dict_refuses_what_is_not_an_event(data: dict[str, object]) -> None:
    """Missing or mistyped fields raise ValueError, never build a half event."""
    with pytest.raises(ValueError, match="not an event"):
        Event.from_dict(data)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b'{"a":NaN}', "NaN is not a JSON value"),
        (b'{"a":1e999}', "out of range"),
        (b"[" * 100_000, "not valid JSON"),
        (b"[]", "JSON array, not an object"),
        (b'"text"', "JSON string, not an object"),
        (b"3", "JSON number, not an object"),
        (b"null", "JSON null, not an object"),
    ],
)
def test_bodies_that_are_not_objects_say_why(raw: bytes, message: str) -> None:
    """Malformed JSON and non-objects raise BodyError with a message naming the problem."""
    with pytest.raises(BodyError, match=message):
        parse_body(raw)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"payload": {}}, "no triggerEvent"),
        ({"triggerEvent": None}, "no triggerEvent"),
        ({"triggerEvent": 5}, "triggerEvent is a JSON number"),
        ({"triggerEvent": ["A"]}, "triggerEvent is a JSON array"),
        ({"triggerEvent": ""}, "not a trigger name"),
        ({"triggerEvent": "A\nB"}, "not a trigger name"),
        ({"triggerEvent": "A" * 129}, "not a trigger name"),
    ],
)
def test_trigger_must_be_a_short_name(document: dict[str, object], message: str) -> None:
    """triggerEvent is required, a string, printable and short."""
    with pytest.raises(BodyError, match=message):
        event_from_body(compact(document), received_at=1.0)


def test_leniencies_of_the_fallback_parser() -> None:
    """A byte-order mark and escaped lone surrogates parse (as the standard library does)."""
    assert parse_body(b'\xef\xbb\xbf{"a":1}') == {"a": 1}
    assert parse_body(b'{"a":"\\ud800"}') == {"a": "\ud800"}
