"""Cal.com's throttling: a window per credential, a block past the limit, the
X-RateLimit-*-Default headers on every answer, 429 ThrottlerException."""

from __future__ import annotations

import httpx
import pytest

from calhooks.service.calcom import Backoff, CalcomError
from calhooks.service.sandbox import SANDBOX_API_KEY, SECOND_API_KEY, SECOND_ORG_ID, RateLimit
from calhooks.service.sandbox.ratelimit import Decision, RateLimiter
from tests.sandbox.server import RunningSandbox

USERS = "cal_organizations_users_controller_get_organizations_users"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_then_block_then_fresh_window() -> None:
    """Three allowed, the fourth blocked for the block time, then a new window."""
    clock = Clock()
    limiter = RateLimiter(RateLimit(limit=3, window=60, block=30), clock)
    allowed = [limiter.hit("k") for _ in range(3)]
    assert allowed == [Decision(True, 3, 2, 60), Decision(True, 3, 1, 60), Decision(True, 3, 0, 60)]
    assert limiter.hit("k") == Decision(False, 3, 0, 30)
    clock.now += 10
    assert limiter.hit("k") == Decision(False, 3, 0, 20)
    clock.now += 20
    assert limiter.hit("k") == Decision(True, 3, 2, 60)


def test_window_expiry_restores_the_allowance() -> None:
    """Hits of a past window no longer count; the reset counts down within a window."""
    clock = Clock()
    limiter = RateLimiter(RateLimit(limit=2, window=60), clock)
    limiter.hit("k")
    clock.now += 45.5
    assert limiter.hit("k") == Decision(True, 2, 0, 15)
    clock.now += 15
    assert limiter.hit("k") == Decision(True, 2, 1, 60)


def test_platform_clients_and_trackers_are_separate() -> None:
    """Each tracker has its own window; platform clients get the client limit."""
    limiter = RateLimiter(RateLimit(limit=1, client_limit=5), Clock())
    limiter.hit("a")
    assert limiter.hit("a") == Decision(False, 1, 0, 60)
    decision = limiter.hit("b", platform_client=True)
    assert decision == Decision(True, 5, 4, 60)


def test_disabled_counts_nothing() -> None:
    assert RateLimiter(RateLimit(enabled=False)).hit("k") is None


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RateLimit(limit=0)


async def test_headers_on_every_answer(sandbox: RunningSandbox) -> None:
    """Success and error answers alike carry the three headers, counting down."""
    auth = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    async with httpx.AsyncClient(base_url=sandbox.url, headers=auth) as http:
        ok = await http.get("/v2/organizations/1/users")
        bad = await http.get("/v2/organizations/1/users", params={"take": "x"})
        missing = await http.get("/v2/organizations/1/users/999/ooo")
    remaining = [r.headers["x-ratelimit-remaining-default"] for r in (ok, bad, missing)]
    assert remaining == ["119", "118", "117"]
    assert {r.headers["x-ratelimit-limit-default"] for r in (ok, bad, missing)} == {"120"}
    assert 0 < int(ok.headers["x-ratelimit-reset-default"]) <= 60


async def test_past_the_limit_is_429_for_that_key_only(sandbox: RunningSandbox) -> None:
    """Over the limit: 429 ThrottlerException (no Retry-After); other keys are unaffected."""
    put = await sandbox.admin("PUT", "/rate-limit", json={"limit": 3, "window": 60})
    assert put.json()["limit"] == 3
    auth = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        answers = [
            (await http.get("/v2/organizations/1/users", headers=auth)).status_code
            for _ in range(3)
        ]
        throttled = await http.get("/v2/organizations/1/users", headers=auth)
        other = await http.get(
            "/v2/organizations/2/users", headers={"Authorization": f"Bearer {SECOND_API_KEY}"}
        )
    assert answers == [200, 200, 200]
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "ThrottlerException"
    assert throttled.json()["error"]["message"] == (
        "CustomThrottlerGuard - Too many requests. Please try again later."
    )
    assert throttled.headers["x-ratelimit-remaining-default"] == "0"
    assert throttled.headers["x-ratelimit-reset-default"] == "60"
    assert "retry-after" not in throttled.headers
    assert other.status_code == 200


async def test_client_defers_when_blocked_longer_than_its_backoff(sandbox: RunningSandbox) -> None:
    """The client reads the reset header and raises with retry_after instead of hammering."""
    await sandbox.admin("PUT", "/rate-limit", json={"limit": 1, "window": 60})
    async with sandbox.client(backoff=Backoff(base=0.01, cap=5)) as cal:
        await cal.call(USERS)
        with pytest.raises(CalcomError) as caught:
            await cal.call(USERS)
    assert caught.value.status == 429
    assert caught.value.retry_after == 60.0
    assert [r.status for r in sandbox.requests(USERS)] == [200, 429]


async def test_off_means_no_headers(sandbox: RunningSandbox) -> None:
    """With throttling off nothing is counted and no rate-limit header is sent."""
    await sandbox.admin("PUT", "/rate-limit", json={"enabled": False})
    async with sandbox.client(SECOND_API_KEY, SECOND_ORG_ID) as cal:
        response = await cal.request(USERS, {})
    assert not any(h.lower().startswith("x-ratelimit") for h in response.headers)
