"""Cal.com's webhook wire format: how a delivery is encoded, signed and labelled.

Every party that speaks it imports it from here: the intake verifies deliveries, the sandbox
Cal.com sends them, and ``calhooks webhooks test`` sends a PING as Cal.com would (FACTS.md §5).

* the body is ``JSON.stringify`` of the delivery: compact, non-ASCII characters as they are;
* ``X-Cal-Signature-256`` is the lowercase hex HMAC-SHA256 of the exact body bytes keyed with
  the webhook's secret, with no prefix and no timestamp; a webhook without a secret sends the
  literal ``no-secret-provided``, which proves nothing;
* ``X-Cal-Webhook-Version`` is ``2021-10-20``;
* ``WEBHOOK_TRIGGERS`` are the triggers a webhook can subscribe to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

SIGNATURE_HEADER = "X-Cal-Signature-256"
VERSION_HEADER = "X-Cal-Webhook-Version"
WEBHOOK_VERSION = "2021-10-20"
NO_SECRET = "no-secret-provided"  # noqa: S105 - the literal Cal.com sends, not a secret

#: Triggers the API accepts in webhook ``triggers`` (FACTS §3, snapshot 2025-10).
WEBHOOK_TRIGGERS = (
    "BOOKING_CREATED",
    "BOOKING_PAYMENT_INITIATED",
    "BOOKING_PAID",
    "BOOKING_RESCHEDULED",
    "BOOKING_REQUESTED",
    "BOOKING_CANCELLED",
    "BOOKING_REJECTED",
    "BOOKING_NO_SHOW_UPDATED",
    "FORM_SUBMITTED",
    "MEETING_ENDED",
    "MEETING_STARTED",
    "RECORDING_READY",
    "INSTANT_MEETING",
    "RECORDING_TRANSCRIPTION_GENERATED",
    "OOO_CREATED",
    "AFTER_HOSTS_CAL_VIDEO_NO_SHOW",
    "AFTER_GUESTS_CAL_VIDEO_NO_SHOW",
    "FORM_SUBMITTED_NO_EVENT",
)


def sign(body: bytes, secret: bytes) -> str:
    """The ``X-Cal-Signature-256`` value Cal.com sends for ``body`` signed with ``secret``."""
    return hmac.digest(secret, body, hashlib.sha256).hex()


def delivery_headers(signature: str, content_type: str = "application/json") -> dict[str, str]:
    """The headers of a delivery whose ``X-Cal-Signature-256`` is ``signature``."""
    return {
        "Content-Type": content_type,
        SIGNATURE_HEADER: signature,
        VERSION_HEADER: WEBHOOK_VERSION,
    }


def compact_json(value: Any) -> str:
    """``JSON.stringify(value)``: no whitespace, non-ASCII characters left as they are."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def utc_timestamp(moment: datetime | None = None) -> str:
    """``2025-10-10T09:12:44.301Z``: ISO-8601 in UTC with milliseconds, as JavaScript prints it."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@cache
def _ping_template() -> str:
    data = resources.files("calhooks.service.calcom").joinpath("data/webhook-ping.json")
    return data.read_text(encoding="utf-8")


def ping_body(now: datetime) -> dict[str, Any]:
    """The body of the dashboard's "Ping test" delivery, sent at ``now`` (an aware UTC time)."""
    body: dict[str, Any] = json.loads(_ping_template())
    body["createdAt"] = utc_timestamp(now)
    moment = utc_timestamp(now.replace(microsecond=0))
    body["payload"].update(startTime=moment, endTime=moment)
    return body
