"""Wake-on-enqueue: a worker starts a queued job at once, with its poll delay only a fallback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.workers.wakeup import WakeableWorker
from tests.waiting import eventually


async def record(ctx: dict[str, Any], name: str) -> str:
    await ctx["started"].put(name)
    return name


async def slow(ctx: dict[str, Any], name: str) -> str:
    await ctx["started"].put(name)
    await asyncio.sleep(0.3)
    return name


@pytest.fixture
def started() -> asyncio.Queue[str]:
    return asyncio.Queue()


@contextlib.asynccontextmanager
async def running(
    redis_server: EmbeddedRedis, started: asyncio.Queue[str], **options: Any
) -> AsyncIterator[WakeableWorker]:
    worker = WakeableWorker(
        functions=[record, slow],
        redis_settings=RedisSettings.from_dsn(redis_server.url),
        handle_signals=False,
        ctx={"started": started},
        **options,
    )
    async with aioredis.Redis.from_url(redis_server.url) as redis:
        waiting = await listeners(redis)
        task = asyncio.create_task(worker.main())
        # The worker has polled once and is blocked on the wake-up list.
        await eventually(lambda: _more(redis, waiting), within=20, what="the worker to listen")
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


async def listeners(redis: aioredis.Redis) -> int:
    """Clients blocked on BLPOP: workers waiting for a wake-up token."""
    clients = await redis.client_list()
    return sum(1 for client in clients if client.get("cmd") == "blpop")


async def _more(redis: aioredis.Redis, than: int) -> bool:
    return await listeners(redis) > than


async def enqueue_and_wake(pool: ArqRedis, function: str, name: str) -> None:
    await pool.enqueue_job(function, name, _job_id=name)
    async with pool.pipeline(transaction=False) as pipe:
        pipe.lpush("arq:queue:wake", 1)
        pipe.ltrim("arq:queue:wake", 0, 63)
        await pipe.execute()


@pytest.fixture
async def pool(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[ArqRedis]:
    arq = await create_pool(RedisSettings.from_dsn(redis_server.url))
    yield arq
    await arq.aclose()


async def test_a_woken_worker_starts_the_job_long_before_its_next_poll(
    redis_server: EmbeddedRedis, pool: ArqRedis, started: asyncio.Queue[str]
) -> None:
    """With a 60 s poll delay, a job pushed with a wake token still starts right away."""
    async with running(redis_server, started, poll_delay=60) as worker:
        await enqueue_and_wake(pool, "record", "a")
        async with asyncio.timeout(10):
            assert await started.get() == "a"
        assert worker.wakeups == 1


async def test_a_full_worker_polls_again_when_a_slot_frees(
    redis_server: EmbeddedRedis, pool: ArqRedis, started: asyncio.Queue[str]
) -> None:
    """Jobs queued while every slot was busy start when one finishes, not at the next poll."""
    async with running(redis_server, started, poll_delay=60, max_jobs=1):
        await enqueue_and_wake(pool, "slow", "first")
        await enqueue_and_wake(pool, "slow", "second")
        async with asyncio.timeout(10):
            assert [await started.get(), await started.get()] == ["first", "second"]


async def test_a_full_worker_hands_its_token_to_another(
    redis_server: EmbeddedRedis, pool: ArqRedis, started: asyncio.Queue[str]
) -> None:
    """A token that woke a full worker goes back on the list for a worker with room."""
    async with running(redis_server, started, poll_delay=60, max_jobs=1) as busy:
        await enqueue_and_wake(pool, "slow", "first")
        async with asyncio.timeout(10):
            await started.get()
        async with running(redis_server, started, poll_delay=60, max_jobs=1) as idle:
            await enqueue_and_wake(pool, "record", "second")
            async with asyncio.timeout(10):
                assert await started.get() == "second"
            assert busy.wakeups + idle.wakeups >= 2


async def test_without_a_token_the_poll_delay_still_finds_jobs(
    redis_server: EmbeddedRedis, pool: ArqRedis, started: asyncio.Queue[str]
) -> None:
    """A job queued with no wake token (a deferred retry coming due) is found by polling."""
    async with running(redis_server, started, poll_delay=0.05) as worker:
        await pool.enqueue_job("record", "quiet", _job_id="quiet")
        async with asyncio.timeout(10):
            assert await started.get() == "quiet"
        assert worker.wakeups == 0


async def test_burst_mode_returns_once_the_queue_is_empty(
    redis_server: EmbeddedRedis, pool: ArqRedis, started: asyncio.Queue[str]
) -> None:
    """--burst drains the queue and returns, as with arq's own worker."""
    for name in ("x", "y"):
        await pool.enqueue_job("record", name, _job_id=name)
    worker = WakeableWorker(
        functions=[record],
        redis_settings=RedisSettings.from_dsn(redis_server.url),
        handle_signals=False,
        burst=True,
        poll_delay=0.01,
        ctx={"started": started},
    )
    async with asyncio.timeout(10):
        await worker.main()
    await worker.close()
    assert worker.jobs_complete == 2


async def test_batched_claims_run_each_job_once_beside_plain_arq_workers(
    redis_server: EmbeddedRedis, pool: ArqRedis, started: asyncio.Queue[str]
) -> None:
    """Two wakeable workers and one plain arq worker share a queue: every job runs once."""
    names = [f"job-{n}" for n in range(60)]
    plain = Worker(
        functions=[record],
        redis_settings=RedisSettings.from_dsn(redis_server.url),
        handle_signals=False,
        poll_delay=0.01,
        ctx={"started": started},
    )
    plain_task = asyncio.create_task(plain.main())
    try:
        async with (
            running(redis_server, started, poll_delay=0.01, max_jobs=7),
            running(redis_server, started, poll_delay=0.01, max_jobs=3),
        ):
            for name in names:
                await enqueue_and_wake(pool, "record", name)
            seen: list[str] = []
            async with asyncio.timeout(20):
                while len(seen) < len(names):
                    seen.append(await started.get())
            await asyncio.sleep(0.2)
            assert started.empty()
    finally:
        plain_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await plain_task
        with pytest.warns(DeprecationWarning, match="aclose"):  # arq 0.28 calls redis close()
            await plain.close()
    assert sorted(seen) == sorted(names)


async def test_a_deferred_job_is_not_claimed_before_its_time(
    redis_server: EmbeddedRedis, pool: ArqRedis, started: asyncio.Queue[str]
) -> None:
    """A job scored in the future (an arq Retry's defer) waits for its time."""
    async with running(redis_server, started, poll_delay=0.02):
        await pool.enqueue_job("record", "later", _job_id="later", _defer_by=0.5)
        await enqueue_and_wake(pool, "record", "now")
        async with asyncio.timeout(10):
            assert await started.get() == "now"
            assert await started.get() == "later"
