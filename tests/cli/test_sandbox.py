"""``calhooks sandbox``: serving (in a real subprocess) and ``emit`` against a running sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from calhooks.service.cli.main import app
from calhooks.service.cli.sandbox import summary_lines
from calhooks.service.core.embedded_redis import free_port
from tests.sandbox.server import RunningSandbox

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the refusal is about


def test_emit_prints_what_was_sent(sandbox: RunningSandbox) -> None:
    """emit builds the event in the running sandbox and prints the body it sent."""
    result = runner.invoke(
        app,
        [
            "sandbox",
            "emit",
            "BOOKING_CREATED",
            "--user",
            "alice",
            "--event-type",
            "time-off",
            "--set",
            'metadata={"ticket": 42}',
            "--set",
            "additionalNotes=Out for the day",
            "--url",
            sandbox.url,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)["body"]["payload"]
    assert (payload["type"], payload["organizer"]["username"]) == ("time-off", "alice")
    assert payload["metadata"]["ticket"] == 42
    assert payload["additionalNotes"] == "Out for the day"
    assert "no active webhook is subscribed to BOOKING_CREATED" in result.stderr


def test_emit_prints_one_plain_line(sandbox: RunningSandbox) -> None:
    """Without --json, emit prints one line: here no webhook, and the booking's uid."""
    result = runner.invoke(app, ["sandbox", "emit", "BOOKING_CREATED", "--url", sandbox.url])
    assert result.exit_code == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith("BOOKING_CREATED: sent to no webhook  booking uid ")


def test_summary_has_one_line_per_delivery() -> None:
    """Each delivery: where to, the status, the intake's event id, the booking's uid."""
    answer = {
        "trigger": "BOOKING_CREATED",
        "body": {"payload": {"uid": "bk1"}},
        "webhooks": ["w1", "w2"],
        "deliveries": [
            {"url": "http://a/webhooks/cal", "status": 202, "response": '{"id": "ev-1"}'},
            {"url": "http://b/hook", "status": None, "error": "connection refused"},
        ],
    }
    assert summary_lines(answer) == [
        "BOOKING_CREATED -> http://a/webhooks/cal  202  event ev-1  booking uid bk1",
        "BOOKING_CREATED -> http://b/hook  no answer (connection refused)  booking uid bk1",
    ]


def test_emit_errors_are_one_line(sandbox: RunningSandbox) -> None:
    """An unsupported trigger or an unreachable sandbox exits 1 with one line."""
    unsupported = runner.invoke(app, ["sandbox", "emit", "BOOKING_PAID", "--url", sandbox.url])
    assert unsupported.exit_code == 1
    assert unsupported.stderr.startswith("error: trigger 'BOOKING_PAID' is not supported")
    gone = runner.invoke(
        app, ["sandbox", "emit", "BOOKING_CREATED", "--url", f"http://127.0.0.1:{free_port()}"]
    )
    assert gone.exit_code == 1
    assert gone.stderr.startswith("error: cannot reach the sandbox")
    assert len(gone.stderr.strip().splitlines()) == 1


def emit(sandbox: RunningSandbox, *args: str) -> dict[str, object]:
    result = runner.invoke(app, ["sandbox", "emit", *args, "--json", "--url", sandbox.url])
    assert result.exit_code == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_emit_booking_changes(sandbox: RunningSandbox) -> None:
    """create, reschedule (twice, once as a request), accept, cancel; request, reject."""
    made = emit(
        sandbox,
        "create",
        "--user",
        "alice",
        "--event-type",
        "time-off",
        "--start",
        "2031-05-04T09:00:00Z",
        "--end",
        "2031-05-06T17:00:00Z",
    )
    uid = made["booking"]["uid"]  # type: ignore[index]
    assert made["trigger"] == "BOOKING_CREATED"
    moved = emit(
        sandbox,
        "reschedule",
        "--uid",
        uid,
        "--start",
        "2031-05-11T09:00:00Z",
        "--end",
        "2031-05-13T17:00:00Z",
    )
    assert moved["trigger"] == "BOOKING_RESCHEDULED"
    assert moved["body"]["payload"]["rescheduleUid"] == uid  # type: ignore[index]
    new = moved["booking"]["uid"]  # type: ignore[index]
    asked = emit(sandbox, "reschedule", "--uid", new, "--as-request")
    assert asked["trigger"] == "BOOKING_REQUESTED"
    assert asked["body"]["payload"]["rescheduleUid"] == new  # type: ignore[index]
    latest = asked["booking"]["uid"]  # type: ignore[index]
    assert emit(sandbox, "accept", "--uid", latest)["trigger"] == "BOOKING_CREATED"
    gone = emit(sandbox, "cancel", "--uid", latest, "--reason", "not needed")
    assert gone["body"]["payload"]["cancellationReason"] == "not needed"  # type: ignore[index]
    pending = emit(sandbox, "request", "--user", "bob", "--event-type", "time-off")
    assert pending["trigger"] == "BOOKING_REQUESTED"
    refused = emit(sandbox, "reject", "--uid", pending["booking"]["uid"])  # type: ignore[index]
    assert refused["trigger"] == "BOOKING_REJECTED"
    statuses = {b.uid: b.status for b in sandbox.store.bookings.values()}
    assert list(statuses.values()) == ["CANCELLED"] * 3 + ["REJECTED"]


def test_emit_booking_change_errors_are_one_line(sandbox: RunningSandbox) -> None:
    for args, message in [
        (["cancel"], "error: cancel needs --uid"),
        (["cancel", "--uid", "nope"], "error: Booking with uid=nope was not found"),
        (["create", "--uid", "x"], "error: create makes a new booking: drop --uid"),
        (["accept", "--uid", "x", "--set", "a=1"], "error: --set applies to triggers"),
    ]:
        result = runner.invoke(app, ["sandbox", "emit", *args, "--url", sandbox.url])
        assert result.exit_code == 1, args
        assert result.stderr.startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_serve_empty_without_rate_limit() -> None:
    """`calhooks sandbox --empty --no-rate-limit` serves a bare, unthrottled sandbox."""
    port = free_port()
    command = [sys.executable, "-m", "calhooks.service", "sandbox", "--port", str(port), "--empty"]
    server = subprocess.Popen(
        [*command, "--no-rate-limit", "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        state = None
        deadline = time.monotonic() + 30
        while state is None and time.monotonic() < deadline and server.poll() is None:
            try:
                state = httpx.get(f"http://127.0.0.1:{port}/_sandbox/state").json()
            except httpx.TransportError:
                time.sleep(0.1)
        assert state is not None, "the sandbox did not come up"
        assert (state["seeded"], state["users"], state["rateLimit"]["enabled"]) == (
            False,
            [],
            False,
        )
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    assert b"CALHOOKS_API_URL=http://127.0.0.1:" in stderr


def test_a_non_loopback_bind_needs_the_flag() -> None:
    result = runner.invoke(app, ["sandbox", "--host", ALL_INTERFACES, "--port", str(free_port())])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: refusing to bind the sandbox to 0.0.0.0")
    assert "--allow-remote" in result.stderr


def test_a_non_loopback_bind_with_the_flag_warns() -> None:
    port = free_port()
    command = [sys.executable, "-m", "calhooks.service", "sandbox", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--host", ALL_INTERFACES, "--allow-remote", "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        up = False
        deadline = time.monotonic() + 30
        while not up and time.monotonic() < deadline and server.poll() is None:
            try:
                up = httpx.get(f"http://127.0.0.1:{port}/_sandbox/state").is_success
            except httpx.TransportError:
                time.sleep(0.1)
        assert up, "the sandbox did not come up"
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    assert b"warning: the sandbox listens on 0.0.0.0:" in stderr
    assert b"need no key" in stderr
