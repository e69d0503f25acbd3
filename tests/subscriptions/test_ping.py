"""Tests of the test-delivery helpers: sandbox detection, pings, and what their verdicts say."""

from __future__ import annotations

import httpx
import pytest

from calhooks.service.core.embedded_redis import free_port
from calhooks.service.subscriptions.errors import PingError
from calhooks.service.subscriptions.ping import PingOutcome, direct_ping, is_sandbox, sandbox_ping
from calhooks.service.subscriptions.secret_store import StoredSecret
from tests.sandbox.server import RunningSandbox


async def test_only_the_sandbox_is_taken_for_the_sandbox(sandbox: RunningSandbox) -> None:
    """The sandbox answers its state; a closed port or another server does not."""
    closed = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    async with httpx.AsyncClient() as http:
        assert await is_sandbox(http, sandbox.url)
        assert not await is_sandbox(http, closed)
        assert not await is_sandbox(http, f"{sandbox.url}/v2")


async def test_pinging_an_unknown_webhook_is_an_error(sandbox: RunningSandbox) -> None:
    """The sandbox's refusal comes back as a PingError naming the webhook."""
    async with httpx.AsyncClient() as http:
        with pytest.raises(PingError, match="not found"):
            await sandbox_ping(http, sandbox.url, "no-such-webhook")


async def test_a_ping_nobody_answers_is_reported_as_not_delivered() -> None:
    """A subscriber URL that refuses connections yields a verdict, not an exception."""
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}/webhooks/cal"
    async with httpx.AsyncClient() as http:
        outcome = await direct_ping(http, url, StoredSecret("s", "whsec_x", 0.0))
    assert not outcome.verified
    assert outcome.status is None
    assert outcome.verdict().startswith("not delivered: ConnectError")


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "verified: the intake accepted the signed PING (HTTP 200)"),
        (401, "rejected: the intake did not verify the signature (HTTP 401) nope"),
        (503, "not verified: the intake answered HTTP 503 nope"),
    ],
)
def test_verdicts(status: int, verdict: str) -> None:
    """Only a 2xx answer counts as verified; 401 is a signature problem, the rest is not."""
    outcome = PingOutcome("direct", "http://x", None, status, response="nope")
    assert outcome.verdict() == verdict
    assert outcome.to_dict()["verified"] is (status == 200)
