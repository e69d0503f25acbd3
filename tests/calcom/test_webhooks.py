"""Cal.com's webhook wire format: signing, the compact body and the PING delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

from calhooks.service.calcom.webhooks import (
    NO_SECRET,
    compact_json,
    ping_body,
    sign,
    utc_timestamp,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
NOW = datetime(2025, 10, 10, 9, 12, 44, 301000, tzinfo=UTC)


def test_sign_is_hex_hmac_sha256_of_the_exact_bytes() -> None:
    body = b'{"triggerEvent":"PING"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, b"s3cret") == expected
    assert sign(body + b" ", b"s3cret") != expected
    assert NO_SECRET == "no-secret-provided"


def test_compact_json_is_json_stringify() -> None:
    assert compact_json({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'


def test_utc_timestamp_prints_milliseconds_and_z() -> None:
    assert utc_timestamp(NOW) == "2025-10-10T09:12:44.301Z"


def test_ping_template_is_the_example() -> None:
    """The packaged PING body is Cal.com's example, unchanged but for its times."""
    example = json.loads((FIXTURES / "PING.json").read_text())
    body = ping_body(NOW)
    assert {**body, "createdAt": None, "payload": {**body["payload"], "startTime": None}} == {
        **example,
        "createdAt": None,
        "payload": {**example["payload"], "startTime": None, "endTime": body["payload"]["endTime"]},
    }


def test_ping_body() -> None:
    """PING carries the current time and the dashboard's fake booking."""
    body = ping_body(NOW)
    assert body["triggerEvent"] == "PING"
    assert body["createdAt"] == "2025-10-10T09:12:44.301Z"
    assert body["payload"]["startTime"] == "2025-10-10T09:12:44.000Z"
    assert body["payload"]["title"] == "Test trigger event"
