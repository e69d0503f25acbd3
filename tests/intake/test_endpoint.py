"""The webhook endpoint over real HTTP (uvicorn) and a real Redis: every answer it gives."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from calhooks.service.events import deserialize_job, event_id
from tests.intake.conftest import (
    OLD_SECRET,
    PATH,
    SECRET,
    booking,
    command,
    compact,
    fixture_body,
    signature,
)
from tests.waiting import eventually

ALL_FIXTURES = [
    "BOOKING_CANCELLED", "BOOKING_CREATED", "BOOKING_NO_SHOW_UPDATED", "BOOKING_REQUESTED",
    "BOOKING_RESCHEDULED", "FORM_SUBMITTED", "MEETING_ENDED", "MEETING_STARTED", "OOO_CREATED",
]  # fmt: skip


async def queued(redis_client: aioredis.Redis) -> list[dict[str, Any]]:
    """The events in arq's queue, as the worker will get them."""
    ids = await command(redis_client, "ZRANGE", "arq:queue", 0, -1)
    events = []
    for job_id in ids:
        job = deserialize_job(await command(redis_client, "GET", b"arq:job:" + job_id))
        events.append(job["a"][0])
    return events


@pytest.mark.parametrize("trigger", ALL_FIXTURES)
async def test_each_example_delivery_is_queued_normalised(
    serve: Any, redis_client: aioredis.Redis, trigger: str
) -> None:
    """Each example body, compact and signed: 202 with its id, one job holding the event."""
    served = serve()
    body = fixture_body(trigger)
    response = served.post(body)
    assert response.status_code == 202
    assert response.json() == {"id": event_id(body)}
    [event] = await queued(redis_client)
    document = json.loads(body)
    assert event["id"] == event_id(body)
    assert event["trigger"] == trigger
    assert event["raw"] == document
    if trigger.startswith("MEETING_"):
        assert event["created_at"] is None
        assert event["payload"] == {k: v for k, v in document.items() if k != "triggerEvent"}
    else:
        assert event["created_at"] == document["createdAt"]
        assert event["payload"] == document["payload"]


async def test_a_repeat_is_answered_duplicate_and_queued_once(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """The same bytes again (a retry or a replay): 200 duplicate, still one job."""
    served = serve()
    body = booking("twice")
    assert served.post(body).status_code == 202
    again = served.post(body)
    assert again.status_code == 200
    assert again.json() == {"id": event_id(body), "duplicate": True}
    assert len(await queued(redis_client)) == 1


async def test_ping_is_answered_and_not_queued(serve: Any, redis_client: aioredis.Redis) -> None:
    """The dashboard's test delivery gets 200 and queues nothing."""
    response = serve().post(fixture_body("PING"))
    assert (response.status_code, response.json()) == (200, {"ping": True})
    assert await queued(redis_client) == []


async def test_unknown_triggers_are_accepted_and_counted(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """A trigger Cal.com does not document is queued (and counted as unknown)."""
    served = serve()
    unknown = 'calhooks_intake_events_total{trigger="unknown"}'
    before = served.metric(unknown)
    body = compact({"triggerEvent": "WRONG_ASSIGNMENT_REPORT", "payload": {"bookingUid": "b"}})
    assert served.post(body).status_code == 202
    [event] = await queued(redis_client)
    assert event["trigger"] == "WRONG_ASSIGNMENT_REPORT"
    assert served.metric(unknown) == before + 1


@pytest.mark.parametrize(
    ("signature_header", "reason"),
    [
        ("", "missing X-Cal-Signature-256"),
        ("0" * 64, "does not match"),
        ("not-hex", "not a hex SHA-256"),
        ("no-secret-provided", "no-secret-provided"),
    ],
)
async def test_bad_signatures_get_401(
    serve: Any, redis_client: aioredis.Redis, signature_header: str, reason: str
) -> None:
    """Missing, wrong, malformed or absent-secret signatures: 401 with a short reason."""
    response = serve().post(booking(), sig=signature_header)
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"
    assert reason in response.json()["message"]
    assert SECRET not in response.text
    assert await queued(redis_client) == []


async def test_unsigned_deliveries_when_explicitly_allowed(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """With CALHOOKS_ALLOW_UNSIGNED, `no-secret-provided` deliveries are queued."""
    response = serve(allow_unsigned=True).post(booking("unsigned"), sig="no-secret-provided")
    assert response.status_code == 202
    assert len(await queued(redis_client)) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON array, not an object"),
        (b'{"payload": {}}', "no triggerEvent"),
        (b'{"triggerEvent": 42}', "triggerEvent is a JSON number"),
        (b"triggerEvent=BOOKING_CREATED", "not valid JSON"),
    ],
)
async def test_bodies_that_are_not_deliveries_get_400(
    serve: Any, redis_client: aioredis.Redis, body: bytes, message: str
) -> None:
    """Correctly signed but not a delivery: 400 saying what is wrong."""
    response = serve().post(body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_body"
    assert message in response.json()["message"]
    assert await queued(redis_client) == []


async def test_oversized_bodies_get_413_by_declared_length(serve: Any) -> None:
    """A Content-Length over the limit is refused before the body is read."""
    served = serve(max_body_bytes=2048)
    response = served.post(b"x" * 3000)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_oversized_streamed_bodies_get_413_while_reading(serve: Any) -> None:
    """Without Content-Length (chunked) the body is counted as it arrives and cut at the limit."""
    served = serve(max_body_bytes=4096)
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"X-Cal-Signature-256: {'0' * 64}\r\n"
            "Content-Type: application/json\r\n\r\n".encode()
        )
        chunk = b"y" * 1000
        for _ in range(6):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_delivery_without_a_signature_is_refused_before_its_body_is_read(serve: Any) -> None:
    """No (or a malformed) signature header: 401 at once, the body never awaited."""
    served = serve()
    host, port = served.url.removeprefix("http://").split(":")
    for header in ("", f"X-Cal-Signature-256: {'z' * 64}\r\n"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n{header}"
                "Content-Type: application/json\r\n\r\n".encode()
            )  # ...and no body at all
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert b"connection: close" in answer


def test_a_streamed_body_under_the_limit_is_accepted(serve: Any) -> None:
    """A chunked body within the limit is put together and verified like any other."""
    served = serve()
    body = booking("chunked")

    def chunks() -> Any:
        yield body[:100]
        yield body[100:]

    response = httpx.post(
        served.url + PATH, content=chunks(), headers={"x-cal-signature-256": signature(body)}
    )
    assert response.status_code == 202


def test_other_methods_get_405(serve: Any) -> None:
    """GET on the webhook path is not a delivery."""
    response = httpx.get(serve().url + PATH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_request_ids_are_echoed_or_made(serve: Any) -> None:
    """A sane X-Request-Id comes back; an absent or odd one is replaced by a fresh one."""
    served = serve()
    assert served.post(booking("r1"), **{"x-request-id": "abc-123"}).headers["x-request-id"] == (
        "abc-123"
    )
    made = served.post(booking("r2"), **{"x-request-id": "bad id;"}).headers["x-request-id"]
    assert made != "bad id;"
    assert len(made) == 16


def write_secrets(path: Path, secrets: list[Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"secrets": secrets}))
    os.replace(temporary, path)


async def test_rotation_accepts_old_and_new_until_the_old_expires(
    serve: Any, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    """Both secrets pass during a rotation; once the old one's expiry passes it is refused."""
    path = tmp_path / "webhook-secrets.json"
    expiry = datetime.now(UTC) + timedelta(seconds=3)
    write_secrets(path, [SECRET, {"secret": OLD_SECRET, "expires": expiry.isoformat()}])
    served = serve(webhook_secrets=None, webhook_secrets_file=path)
    assert served.post(booking("new")).status_code == 202
    old = booking("old")
    assert served.post(old, sig=signature(old, OLD_SECRET)).status_code == 202
    assert datetime.now(UTC) < expiry, "too slow to see the old secret before its expiry"
    tries: list[int] = []

    def refused() -> bool:
        late = booking(f"late-{len(tries)}")
        tries.append(served.post(late, sig=signature(late, OLD_SECRET)).status_code)
        return tries[-1] == 401

    await eventually(refused, within=30, what="the expired secret to be refused")
    assert datetime.now(UTC) >= expiry
    assert set(tries[:-1]) <= {202}  # accepted until the expiry, then refused
    assert served.post(booking("late")).status_code == 202
    assert len(await queued(redis_client)) == 3 + len(tries) - 1


async def test_a_new_secret_in_the_file_is_picked_up_at_once(
    serve: Any, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    """A delivery signed with a secret just added to the file is accepted without a restart."""
    path = tmp_path / "webhook-secrets.json"
    write_secrets(path, [OLD_SECRET])
    served = serve(webhook_secrets=None, webhook_secrets_file=path, webhook_secrets_refresh=3600)
    body = booking("rotated")
    assert served.post(body).status_code == 401
    write_secrets(path, [SECRET, OLD_SECRET])  # within a second of the refresh the 401 made
    assert served.post(body).status_code == 202


def test_each_request_logs_one_line_without_body_or_secret(serve: Any) -> None:
    """One structured line per delivery: ids, trigger, outcome, latency; no body, no secret."""
    served = serve()
    body = booking("logged", note="private-note-text")
    with capture_logs() as logs:
        served.post(body, **{"x-request-id": "req-42"})
        served.post(body, sig="0" * 64, **{"x-request-id": "req-43"})
    deliveries = [entry for entry in logs if entry["event"] == "delivery"]
    assert [(d["request_id"], d["outcome"], d["status"]) for d in deliveries] == [
        ("req-42", "accepted", 202), ("req-43", "bad_signature", 401),
    ]  # fmt: skip
    assert deliveries[0]["event_id"] == event_id(body)
    assert deliveries[0]["trigger"] == "BOOKING_CREATED"
    assert deliveries[0]["latency_ms"] >= 0
    text = json.dumps(logs)
    assert "private-note-text" not in text
    assert SECRET not in text
