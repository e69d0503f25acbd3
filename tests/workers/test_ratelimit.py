"""The shared Cal.com rate limit: one send log in Redis for all workers, fed by Cal.com."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import Credentials
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.workers.ratelimit import TICKET, SharedRateLimit, advertised_limit, bucket_name
from calhooks.workers.retries import Defer
from tests.counting import most_in_any_window


class FakeSleep:
    """Records waits instead of sleeping, so reservations can be checked without a clock."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def grant_times(limiter: SharedRateLimit, count: int) -> list[float]:
    """Take ``count`` slots; return every send time in the shared log (Redis's clock)."""
    for _ in range(count):
        await limiter.acquire()
    log = await limiter.redis.zrange(limiter.log_key, 0, -1, withscores=True)
    return [score for _, score in log]


async def test_workers_sharing_a_bucket_never_exceed_the_limit_in_any_minute(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    """Four limiters on one bucket keep every 60 s window under 120 while pacing near it."""
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(4)]
    try:
        limiters = [
            SharedRateLimit(c, "acct", per_minute=120, max_wait=1000, sleep=FakeSleep())
            for c in clients
        ]
        await asyncio.gather(*(grant_times(lim, 60) for lim in limiters))
        times = await grant_times(limiters[0], 0)
    finally:
        for c in clients:
            await c.aclose()
    assert len(times) == 240
    assert most_in_any_window(times) <= 119
    span = max(times) - min(times)
    achieved_per_minute = (len(times) - 1) / span * 60
    assert achieved_per_minute >= 0.95 * 120


async def test_a_quiet_account_lets_a_burst_through_then_waits_for_the_window(
    redis_client: aioredis.Redis,
) -> None:
    """After a quiet spell L - 1 calls go at once; the next waits for the oldest to age out."""
    limiter = SharedRateLimit(redis_client, "acct", per_minute=60, max_wait=1000, sleep=FakeSleep())
    assert [await limiter.acquire() for _ in range(59)] == [0.0] * 59
    assert 60 < await limiter.acquire() <= 61  # the window plus its 1-s jitter margin


async def test_a_reservation_beyond_max_wait_defers_without_taking_a_slot(
    redis_client: aioredis.Redis,
) -> None:
    """Past max_wait the caller gets Defer (give the job slot back); nothing is reserved."""
    limiter = SharedRateLimit(redis_client, "acct", per_minute=60, max_wait=2.5, sleep=FakeSleep())
    for _ in range(59):
        await limiter.acquire()
    with pytest.raises(Defer) as deferred:
        await limiter.acquire()
    assert 60 < deferred.value.delay <= 61
    assert await redis_client.zcard("calhooks:ratelimit:acct:log") == 59


async def test_a_429_blocks_every_worker_until_cal_com_says(redis_client: aioredis.Redis) -> None:
    """After a 429 with Retry-After, other limiters on the bucket wait at least that long."""
    first = SharedRateLimit(redis_client, "acct", max_wait=100, sleep=FakeSleep())
    sleep = FakeSleep()
    second = SharedRateLimit(redis_client, "acct", max_wait=100, sleep=sleep)
    blocked = await first.report(429, {"Retry-After": "20"})
    assert 19 < blocked <= 20
    waited = await second.acquire()
    assert waited >= 19
    impatient = SharedRateLimit(redis_client, "acct", max_wait=5, sleep=FakeSleep())
    with pytest.raises(Defer):
        await impatient.acquire()


async def test_an_exhausted_remaining_header_blocks_until_its_reset(
    redis_client: aioredis.Redis,
) -> None:
    """X-RateLimit-Remaining-Default: 0 blocks the bucket for X-RateLimit-Reset-Default seconds."""
    limiter = SharedRateLimit(redis_client, "acct", max_wait=100, sleep=FakeSleep())
    headers = {"X-RateLimit-Remaining-Default": "0", "X-RateLimit-Reset-Default": "8"}
    assert 7 < await limiter.report(200, headers) <= 8
    assert await limiter.acquire() >= 7
    untouched = {"X-RateLimit-Remaining-Default": "57", "X-RateLimit-Reset-Default": "8"}
    other = SharedRateLimit(redis_client, "other", max_wait=100, sleep=FakeSleep())
    assert await other.report(200, untouched) == 0
    assert await other.acquire() == 0


async def test_a_lower_advertised_limit_slows_the_pace(redis_client: aioredis.Redis) -> None:
    """A key with a custom limit of 30/min paces at that limit, not the configured 120."""
    limiter = SharedRateLimit(
        redis_client, "acct", per_minute=120, max_wait=1000, sleep=FakeSleep()
    )
    await limiter.report(200, {"X-RateLimit-Limit-Default": "30"})
    times = await grant_times(limiter, 40)
    assert most_in_any_window(times) <= 29


async def test_a_zero_limit_turns_the_bucket_off(redis_client: aioredis.Redis) -> None:
    """per_minute=0 never waits and never touches Redis."""
    limiter = SharedRateLimit(redis_client, "acct", per_minute=0)
    assert [await limiter.acquire() for _ in range(500)] == [0.0] * 500
    assert await redis_client.exists("calhooks:ratelimit:acct") == 0


def test_buckets_are_per_account_and_limits_are_read_from_headers() -> None:
    """Two API keys get two buckets; the lowest X-RateLimit-Limit-* is the advertised limit."""
    one = bucket_name("https://api.cal.com", Credentials(api_key="cal_live_one"))
    two = bucket_name("https://api.cal.com", Credentials(api_key="cal_live_two"))
    assert one != two
    assert "cal_live" not in one
    assert (
        advertised_limit({"x-ratelimit-limit-default": "120", "X-RateLimit-Limit-Burst": "20"})
        == 20
    )
    assert advertised_limit({"content-type": "application/json"}) is None


async def test_a_block_arriving_while_waiting_extends_the_wait(
    redis_client: aioredis.Redis,
) -> None:
    """A limiter sleeping on its reservation also honours a 429 another worker saw meanwhile."""
    other = SharedRateLimit(redis_client, "acct", max_wait=100)

    class SleepThrough429(FakeSleep):
        async def __call__(self, seconds: float) -> None:
            await super().__call__(seconds)
            if len(self.waits) == 1:
                await other.report(429, {"Retry-After": "90"})

    sleep = SleepThrough429()
    limiter = SharedRateLimit(redis_client, "acct", per_minute=2, max_wait=200, sleep=sleep)
    await limiter.acquire()
    waited = await limiter.acquire()
    assert len(sleep.waits) == 2
    assert 60 < sleep.waits[0] <= 61
    assert 89 < sleep.waits[1] <= 90
    assert waited == pytest.approx(sum(sleep.waits))


async def test_a_shorter_window_scales_the_limit(redis_client: aioredis.Redis) -> None:
    """120/min counted in 6-s windows allows 12 per window, paced to stay under it."""
    limiter = SharedRateLimit(
        redis_client, "acct", per_minute=120, window=6, max_wait=1000, sleep=FakeSleep()
    )
    assert limiter.per_window == 12
    times = await grant_times(limiter, 40)
    assert most_in_any_window(times, window=6) <= 11


async def test_a_job_past_its_hold_reserves_its_slot_and_defers_for_exactly_that_wait(
    redis_client: aioredis.Redis,
) -> None:
    """Within a job (a ticket), a wait past ``hold`` is reserved, not slept: Defer for it;
    coming back, the job's request takes the reserved slot instead of reserving another."""
    sleep = FakeSleep()
    limiter = SharedRateLimit(
        redis_client, "acct", per_minute=60, max_wait=120, hold=1.0, sleep=sleep
    )
    for _ in range(59):
        await limiter.acquire()
    ticket = TICKET.set("event-1")
    try:
        with pytest.raises(Defer, match="slot reserved") as deferred:
            await limiter.acquire()
        assert 60 < deferred.value.delay <= 61
        assert await redis_client.zcard(limiter.log_key) == 60  # the slot is held
        assert await limiter.acquire() == pytest.approx(deferred.value.delay, abs=0.5)
        assert await redis_client.zcard(limiter.log_key) == 60  # ...and was this request's
        assert await redis_client.zscore(limiter.log_key, "ticket:event-1") is None
    finally:
        TICKET.reset(ticket)
    assert sleep.waits
    assert max(sleep.waits) <= 61


async def test_each_deferred_job_holds_its_own_slot_in_order(redis_client: aioredis.Redis) -> None:
    """Three jobs of a saturated key are each deferred to a later slot of their own."""
    limiter = SharedRateLimit(
        redis_client, "acct", per_minute=60, max_wait=300, hold=0.5, sleep=FakeSleep()
    )
    for _ in range(59):
        await limiter.acquire()
    for event in ("a", "b", "c"):
        ticket = TICKET.set(event)
        try:
            with pytest.raises(Defer):
                await limiter.acquire()
        finally:
            TICKET.reset(ticket)
    log = await redis_client.zrange(limiter.log_key, 0, -1, withscores=True)
    held = [(member, at) for member, at in log if member.startswith(b"ticket:")]
    assert [member for member, _ in held] == [b"ticket:a", b"ticket:b", b"ticket:c"]
    assert most_in_any_window([at for _, at in log], window=60.0) <= 59


async def test_a_short_wait_within_the_hold_is_slept_in_the_slot(
    redis_client: aioredis.Redis,
) -> None:
    """A job whose wait is within ``hold`` keeps its slot and sleeps (no re-queue)."""
    sleep = FakeSleep()
    limiter = SharedRateLimit(
        redis_client, "acct", per_minute=60, max_wait=120, hold=100, sleep=sleep
    )
    for _ in range(59):
        await limiter.acquire()
    ticket = TICKET.set("event-2")
    try:
        assert 60 < await limiter.acquire() <= 61
    finally:
        TICKET.reset(ticket)
    assert await redis_client.zscore(limiter.log_key, "ticket:event-2") is None
