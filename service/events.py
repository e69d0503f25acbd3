"""The contract between the intake and the workers: the event and the arq job that carries it.

The intake (``calhooks.service.intake``) writes jobs and the workers (``calhooks.workers``) read
them; both import this module and nothing else of each other. It holds:

* ``Event``: one Cal.com delivery, normalised into the single shape the workers consume;
* the job: one arq job per event, function ``process_event`` (``JOB_FUNCTION``), one
  positional argument (``Event.to_dict()``), job id = event id, on ``settings.queue_name``.
  Jobs are JSON, not pickle: ``serialize_job``/``deserialize_job`` are what the worker hands
  arq as ``job_serializer``/``job_deserializer`` (they also carry arq's result records, so
  anything JSON cannot hold is turned into something it can);
* the key names both sides share: the queue's wake-up list (``wake_key``), the intake's
  de-duplication keys (``DEDUPE_PREFIX``) and the request a reconciliation pass leaves for
  the web process to re-apply the webhook plan when someone changed calhooks' own webhook
  (``reapply_key``).

**Format version.** The event dict carries ``"v": EVENT_FORMAT``; one without ``v`` was
written by a release before versioning and is format 1 (the same fields). ``from_dict``
raises ``NewerFormat`` for a format this code does not know, so a worker of the previous
release-to-be leaves (re-queues) a job written by a newer intake during a rolling upgrade
instead of misreading it. A release that changes the event's fields increments
``EVENT_FORMAT`` and keeps reading the formats before it.

Cal.com's bodies are not uniform (FACTS.md §5):

* most are the envelope ``{"triggerEvent", "createdAt", "payload": {...}}``;
* ``MEETING_STARTED``/``MEETING_ENDED`` arrive *flat*: the booking row's fields next to
  ``triggerEvent``, with no ``payload`` and no delivery ``createdAt`` (a ``createdAt`` there is
  the booking's);
* ``FORM_SUBMITTED`` is the envelope plus each form field copied to the top level.

``normalise`` turns any of them into an ``Event``: ``payload`` is the envelope's ``payload``
(the top-level copies of ``FORM_SUBMITTED`` stay in ``raw``) or, for a flat body, the body
minus ``triggerEvent``; ``created_at`` is the envelope's ``createdAt`` and ``None`` for a
flat body. Unknown triggers are normalised the same way, never rejected.

The event ``id`` is the SHA-256 of the raw body bytes: Cal.com sends no delivery id, a retry
repeats the same bytes, and a replay cannot change a byte without breaking the signature.
An event of a connection (``connection``: its PCID) hashes the PCID in front of the body, so
two organizations never share an id; the environment's organization (``connection`` None)
keeps the plain digest.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson

from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS

JOB_FUNCTION = "process_event"
#: Version of ``Event.to_dict``'s form (the job argument); absent means 1.
#: 2 added ``connection`` and ``source`` (format 1 reads as the environment's organization
#: and ``"webhook"``).
EVENT_FORMAT = 2
#: ``Event.source`` of a delivery Cal.com sent.
WEBHOOK_SOURCE = "webhook"
#: ``Event.source`` of an event a reconciliation pass produced.
RECONCILE_SOURCE = "reconcile"
DEDUPE_PREFIX = "calhooks:intake:seen:"
#: Length the wake-up list is trimmed to: a worker needs one token, not one per event.
WAKE_LIST_LENGTH = 64

PING = "PING"
#: Triggers Cal.com documents, plus the dashboard's test delivery.
KNOWN_TRIGGERS = frozenset((*WEBHOOK_TRIGGERS, PING))
#: Longest trigger name accepted; anything longer is not a trigger but garbage.
MAX_TRIGGER_LENGTH = 128
#: Deepest nesting of objects and arrays a body may have (the body object itself is level 1).
#: Cal.com's deliveries nest 5 levels deep (tests/fixtures/webhooks); past this the body is
#: refused (400 ``bad_body``) before anything deeper can reach the job encoder or the rules.
MAX_JSON_DEPTH = 64


class NewerFormat(ValueError):
    """A record written by a newer release, in a format this code does not know."""

    def __init__(self, what: str, found: object, known: int) -> None:
        self.what = what
        self.found = found
        self.known = known
        super().__init__(f"{what} has format {found!r}; this release knows up to {known}")


def record_format(data: Any, what: str, known: int) -> int:
    """The format of a versioned record (``v``; absent: 1); ``NewerFormat`` past ``known``."""
    found = data.get("v", 1) if isinstance(data, dict) else 1
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise NewerFormat(what, found, known)
    if found > known:
        raise NewerFormat(what, found, known)
    return found


class BodyError(ValueError):
    """The body is not a delivery: not JSON, not an object, or without a usable trigger."""


def event_id(raw: bytes, connection: str | None = None) -> str:
    """The dedupe key of a delivery: hex SHA-256 of its exact bytes (after its connection's
    PCID and a NUL, for a connection's delivery)."""
    if connection is None:
        return hashlib.sha256(raw).hexdigest()
    digest = hashlib.sha256(connection.encode())
    digest.update(b"\0")
    digest.update(raw)
    return digest.hexdigest()


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; ``BodyError`` saying what is wrong otherwise.

    Objects and arrays may nest ``MAX_JSON_DEPTH`` levels at most. orjson parses (it is
    several times faster on the hot path); what it refuses is given to
    the standard library's parser, which accepts a little more (a byte-order mark, escaped
    lone surrogates). Both refuse ``NaN``, ``Infinity`` and numbers too large for a double;
    integers beyond 64 bits come out as floats, as JavaScript (Cal.com) reads them too.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = _parse_leniently(raw)
    if not isinstance(body, dict):
        raise BodyError(f"body is a JSON {_json_type(body)}, not an object")
    # Fewer brackets than the limit (counted in C, strings included) cannot nest deeper.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _deeper_than(body, MAX_JSON_DEPTH):
        raise BodyError(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether objects/arrays in ``document`` nest more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _parse_leniently(raw: bytes) -> Any:
    try:
        return _STRICT_CONSTANTS.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        raise BodyError("body is not valid JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise BodyError(f"body is not valid JSON: {error}") from None


def trigger_of(body: dict[str, Any]) -> str:
    """The body's ``triggerEvent``; ``BodyError`` when missing or not a short string."""
    trigger = body.get("triggerEvent")
    if trigger is None:
        raise BodyError("body has no triggerEvent")
    if not isinstance(trigger, str):
        raise BodyError(f"triggerEvent is a JSON {_json_type(trigger)}, not a string")
    if not trigger or len(trigger) > MAX_TRIGGER_LENGTH or not trigger.isprintable():
        raise BodyError("triggerEvent is not a trigger name")
    return trigger


@dataclass(frozen=True, slots=True)
class Event:
    """One delivery as the workers see it (``raw`` keeps the body exactly as parsed).

    ``connection`` is the PCID of the connection it came through (``None``: the organization
    configured by the environment); ``source`` is ``"webhook"`` for a delivery and
    ``"reconcile"`` for what a reconciliation pass found.
    """

    id: str
    trigger: str
    created_at: str | None
    payload: dict[str, Any]
    raw: dict[str, Any]
    received_at: float
    connection: str | None = None
    source: str = WEBHOOK_SOURCE

    @property
    def known(self) -> bool:
        """Whether Cal.com documents this trigger."""
        return self.trigger in KNOWN_TRIGGERS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the job argument on the queue."""
        return {
            "v": EVENT_FORMAT,
            "id": self.id,
            "trigger": self.trigger,
            "created_at": self.created_at,
            "payload": self.payload,
            "raw": self.raw,
            "received_at": self.received_at,
            "connection": self.connection,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """The inverse of ``to_dict``; ``ValueError`` when ``data`` is not an event,
        ``NewerFormat`` (a ``ValueError``) when a newer release wrote it."""
        found = record_format(data, "event", EVENT_FORMAT)
        try:
            event_id_, trigger, created_at = data["id"], data["trigger"], data["created_at"]
            payload, raw, received_at = data["payload"], data["raw"], data["received_at"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"not an event: missing {error}") from None
        if not isinstance(event_id_, str) or not isinstance(trigger, str):
            raise ValueError("not an event: id and trigger must be strings")
        if created_at is not None and not isinstance(created_at, str):
            raise ValueError("not an event: created_at must be a string or null")
        if not isinstance(payload, dict) or not isinstance(raw, dict):
            raise ValueError("not an event: payload and raw must be objects")
        if isinstance(received_at, bool) or not isinstance(received_at, int | float):
            raise ValueError("not an event: received_at must be a number")
        if not math.isfinite(received_at):
            raise ValueError("not an event: received_at must be finite")
        connection, source = None, WEBHOOK_SOURCE
        if found >= 2:
            connection, source = data.get("connection"), data.get("source", WEBHOOK_SOURCE)
            if connection is not None and not isinstance(connection, str):
                raise ValueError("not an event: connection must be a string or null")
            if not isinstance(source, str):
                raise ValueError("not an event: source must be a string")
        return cls(
            event_id_, trigger, created_at, payload, raw, float(received_at), connection, source
        )


def normalise(
    body: dict[str, Any],
    *,
    id: str,
    received_at: float,
    connection: str | None = None,
    source: str = WEBHOOK_SOURCE,
) -> Event:
    """The ``Event`` of a parsed delivery body (see the module docstring for the variants)."""
    trigger = trigger_of(body)
    payload = body.get("payload")
    created_at: str | None = None
    if isinstance(payload, dict):
        stamp = body.get("createdAt")
        created_at = stamp if isinstance(stamp, str) else None
    else:
        payload = {key: value for key, value in body.items() if key != "triggerEvent"}
    return Event(id, trigger, created_at, payload, body, received_at, connection, source)


def event_from_body(raw: bytes, *, received_at: float, connection: str | None = None) -> Event:
    """Parse, check and normalise one raw delivery body (``BodyError`` when it is not one)."""
    return normalise(
        parse_body(raw),
        id=event_id(raw, connection),
        received_at=received_at,
        connection=connection,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


_STRICT_CONSTANTS = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "object"


def _jsonable(value: Any) -> Any:
    """What ``json`` cannot encode, in a form it can (arq's results may hold anything)."""
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return repr(value)


def serialize_job(obj: Any) -> bytes:
    """arq's ``job_serializer``: compact JSON.

    orjson for speed; the standard library's encoder when orjson refuses a value (an integer
    beyond 64 bits, a string with a lone surrogate), so every parsed body round-trips.
    """
    try:
        return orjson.dumps(obj, default=_jsonable)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), default=_jsonable).encode()


def deserialize_job(data: bytes) -> dict[str, Any]:
    """arq's ``job_deserializer`` (the standard library's: exact for any integer)."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("an arq job must be a JSON object")
    return value


def job_bytes(event: Event, enqueue_time_ms: int) -> bytes:
    """The arq job record for ``event``, as arq's ``serialize_job`` lays it out."""
    return serialize_job(
        {"t": None, "f": JOB_FUNCTION, "a": [event.to_dict()], "k": {}, "et": enqueue_time_ms}
    )


def wake_key(queue_name: str) -> str:
    """The list an enqueuer pushes to so an idle worker polls at once."""
    return f"{queue_name}:wake"


def reapply_key(deployment: str) -> str:
    """Set by a reconciliation pass that saw this deployment's own webhook change (the value:
    the ``calhooks.WEBHOOK_CHANGED`` event's id); the web process deletes it and re-applies."""
    return f"calhooks:webhooks:reapply:{deployment}"
