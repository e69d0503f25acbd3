"""Leases: a running job's in-progress key and its booking lock lapse soon after a worker dies,
and live as long as the job while the worker is alive; a Redis outage does not stop a worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings, create_pool

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.workers import keys
from calhooks.workers.leases import LeaseKeeper
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.wakeup import WakeableWorker
from tests.waiting import eventually


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)


async def slow(ctx: dict[str, Any], name: str, seconds: float) -> str:
    await ctx["started"].put(name)
    await asyncio.sleep(seconds)
    await ctx["finished"].put(name)
    return name


@contextlib.asynccontextmanager
async def running(
    url: str, ctx: dict[str, Any], **options: Any
) -> AsyncIterator[tuple[WakeableWorker, asyncio.Task[None]]]:
    worker = WakeableWorker(
        functions=[slow],
        redis_settings=RedisSettings.from_dsn(url),
        handle_signals=False,
        ctx=ctx,
        poll_delay=0.05,
        **options,
    )
    task = asyncio.create_task(worker.main())
    try:
        yield worker, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await worker.close()


@pytest.fixture
async def pool(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[ArqRedis]:
    arq = await create_pool(RedisSettings.from_dsn(redis_server.url))
    yield arq
    await arq.aclose()


def job_queues() -> dict[str, Any]:
    return {"started": asyncio.Queue(), "finished": asyncio.Queue()}


async def test_the_keeper_renews_what_it_holds_and_reports_what_it_lost(
    redis_client: aioredis.Redis,
) -> None:
    keeper = LeaseKeeper(redis_client, lease=2.0)
    await redis_client.set("mine", "me", px=500)
    await redis_client.set("taken", "someone-else", px=500)
    keeper.hold("mine", "me")
    keeper.hold("taken", "me")
    keeper.hold("gone", "me")
    lost = await keeper.renew()
    assert sorted(lost) == ["gone", "taken"]
    assert 1500 < await redis_client.pttl("mine") <= 2000
    assert await redis_client.pttl("taken") <= 500  # not renewed: not ours
    assert keeper.held == {"mine": "me"}


async def test_a_key_released_during_a_renewal_is_not_reported_lost(
    redis_client: aioredis.Redis,
) -> None:
    """A job that ends while a renewal is on the wire deletes its key and drops it: the
    renewal finds the key gone, but it was released, not lost (no warning, no ``on_lost``)."""
    reported: list[str] = []
    keeper = LeaseKeeper(redis_client, lease=2.0, on_lost=reported.append)
    keeper.hold("ended", "me")  # not in Redis: the job's end already deleted it
    renewal = asyncio.create_task(keeper.renew())
    await asyncio.sleep(0)  # the renewal has taken its list of keys and is on the wire
    keeper.drop("ended")
    assert await renewal == []
    assert reported == []


async def test_a_claimed_job_holds_a_short_lease_renewed_for_as_long_as_it_runs(
    redis_server: EmbeddedRedis, pool: ArqRedis
) -> None:
    """Lease 1 s, job 3 s: the in-progress key is never older than a lease, yet never lapses."""
    ctx = job_queues()
    async with running(redis_server.url, ctx, lease=1.0) as (worker, _):
        await pool.enqueue_job("slow", "long", 3.0, _job_id="long")
        async with asyncio.timeout(10):
            assert await ctx["started"].get() == "long"
        key = "arq:in-progress:long"
        assert await pool.get(key) == worker.token.encode()
        while ctx["finished"].empty():
            ttl = await pool.pttl(key)
            assert 0 < ttl <= 1000, ttl  # alive, and never the job timeout's length
            await asyncio.sleep(0.1)
        assert worker.leases is not None
        assert worker.leases.renewals >= 3
        await eventually(lambda: _gone(pool, key), what="the in-progress key deleted")


async def test_a_dead_workers_job_is_taken_by_another_worker_once_its_lease_lapses(
    redis_server: EmbeddedRedis, pool: ArqRedis
) -> None:
    """What a killed worker leaves: its job queued, its in-progress key with a lease of 1 s
    left. Another worker runs the job once that lapses, though the job timeout is 300 s."""
    ctx = job_queues()
    await pool.enqueue_job("slow", "held", 0.0, _job_id="held")
    await pool.set("arq:in-progress:held", b"dead-worker", px=1000)
    async with running(redis_server.url, ctx, lease=1.0, job_timeout=300) as (worker, _):
        await asyncio.sleep(0.3)
        assert ctx["started"].empty()  # held by the dead worker's lease for now
        async with asyncio.timeout(20):
            assert await ctx["finished"].get() == "held"
        assert worker.in_progress_timeout_s == 1.0


async def test_finishing_a_job_leaves_another_workers_in_progress_key_alone(
    redis_server: EmbeddedRedis, pool: ArqRedis
) -> None:
    async with running(redis_server.url, job_queues(), lease=5.0) as (worker, _):
        await pool.set("arq:in-progress:other", b"someone-else", px=5000)
        await worker.finish_job("other", False, None, None, False, None, None)
        assert await pool.get("arq:in-progress:other") == b"someone-else"
        await pool.set("arq:in-progress:mine", worker.token.encode(), px=5000)
        await worker.finish_job("mine", False, None, None, False, None, None)
        assert not await pool.exists("arq:in-progress:mine")


async def test_a_booking_lock_is_a_lease_kept_while_held_and_lapsing_when_not(
    redis_client: aioredis.Redis,
) -> None:
    keeper = LeaseKeeper(redis_client, lease=1.0)
    order = BookingOrder(redis_client, leases=keeper)
    assert order.lease == 1.0
    payload = {"uid": "bk-1"}
    async with order.turn("ev-1", "BOOKING_CREATED", payload, 1.0):
        assert keeper.held == {keys.booking_lock("bk-1"): "ev-1"}
        assert 0 < await redis_client.pttl(keys.booking_lock("bk-1")) <= 1000
    assert keeper.held == {}
    # Held but never renewed (the holder died): gone within the lease.
    await order._acquire("bk-2", None, "ev-2", 1.0)
    await eventually(lambda: _gone(redis_client, keys.booking_lock("bk-2")), what="lapse")


async def test_a_worker_waits_out_a_redis_outage_and_takes_jobs_again(tmp_path: Any) -> None:
    """Redis killed under a running worker: no exit, the loop keeps turning; restarted (from
    its AOF, same port), the queued job runs."""
    server = EmbeddedRedis(directory=tmp_path / "redis", persistent=True).start()
    try:
        ctx = job_queues()
        async with running(server.url, ctx, lease=2.0, redis_timeout=1.0) as (worker, task):
            await asyncio.sleep(0.2)
            server.stop()
            await eventually(lambda: worker.redis_away_since is not None, what="the outage seen")
            stamp = worker.last_iteration
            await asyncio.sleep(1.0)
            assert not task.done()
            assert worker.last_iteration > stamp  # the loop turns: /livez stays 200
            server.start()
            arq = await create_pool(RedisSettings.from_dsn(server.url))
            try:
                await arq.enqueue_job("slow", "after", 0.0, _job_id="after")
                async with asyncio.timeout(20):
                    assert await ctx["finished"].get() == "after"
            finally:
                await arq.aclose()
            assert worker.outages == 1
            assert not task.done()
    finally:
        server.close()
