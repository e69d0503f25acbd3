"""arq's job start (in the claim script) and end (one script): arq's semantics, key by key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import Job, JobStatus
from arq.worker import Retry, func

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.workers.wakeup import WakeableWorker
from tests.waiting import eventually


async def record(ctx: dict[str, Any], name: str) -> str:
    ctx["tries"].append((name, ctx["job_try"]))
    return name.upper()


async def retry_once(ctx: dict[str, Any], name: str) -> str:
    ctx["tries"].append((name, ctx["job_try"]))
    if ctx["job_try"] == 1:
        raise Retry(defer=0.05)
    return "done"


async def always_retry(ctx: dict[str, Any], name: str) -> None:
    ctx["tries"].append((name, ctx["job_try"]))
    raise Retry(defer=0.01)


@contextlib.asynccontextmanager
async def running(redis_server: EmbeddedRedis, **options: Any) -> AsyncIterator[WakeableWorker]:
    worker = WakeableWorker(
        functions=[record, retry_once, func(always_retry, max_tries=2)],
        redis_settings=RedisSettings.from_dsn(redis_server.url),
        handle_signals=False,
        poll_delay=0.05,
        ctx={"tries": []},
        **options,
    )
    task = asyncio.create_task(worker.main())
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


@pytest.fixture
async def pool(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[ArqRedis]:
    arq = await create_pool(RedisSettings.from_dsn(redis_server.url))
    yield arq
    await arq.aclose()


async def finished(job: Job) -> bool:
    return await job.status() == JobStatus.complete


async def test_a_job_runs_once_and_its_end_leaves_only_the_result(
    redis_server: EmbeddedRedis, pool: ArqRedis, redis_client: aioredis.Redis
) -> None:
    """Try 1 in the job's context; the job, retry and in-progress keys go, the result stays
    for arq's keep_result (1 h), and the queue no longer holds the job."""
    async with running(redis_server) as worker:
        job = await pool.enqueue_job("record", "a", _job_id="a")
        assert job is not None
        await eventually(lambda: finished(job), within=20, what="the job to finish")
        assert worker.ctx["tries"] == [("a", 1)]
    info = await job.result_info()
    assert info is not None
    assert info.success
    assert info.result == "A"
    assert info.job_try == 1
    assert await redis_client.exists("arq:job:a", "arq:retry:a", "arq:in-progress:a") == 0
    assert 3_500_000 < await redis_client.pttl("arq:result:a") <= 3_600_000
    assert await redis_client.zscore("arq:queue", "a") is None


async def test_a_retried_job_runs_again_with_its_try_counted(
    redis_server: EmbeddedRedis, pool: ArqRedis
) -> None:
    """``Retry`` pushes the job's score back and keeps it; the next claim counts try 2."""
    async with running(redis_server) as worker:
        job = await pool.enqueue_job("retry_once", "r", _job_id="r")
        assert job is not None
        await eventually(lambda: finished(job), within=20, what="the retried job to finish")
        assert worker.ctx["tries"] == [("r", 1), ("r", 2)]
    info = await job.result_info()
    assert info is not None
    assert info.success
    assert info.job_try == 2


async def test_a_job_past_its_max_tries_fails_without_running(
    redis_server: EmbeddedRedis, pool: ArqRedis, redis_client: aioredis.Redis
) -> None:
    """The function's ``max_tries`` (2) is checked against the counter the claim increments."""
    async with running(redis_server) as worker:
        job = await pool.enqueue_job("always_retry", "m", _job_id="m")
        assert job is not None
        await eventually(lambda: finished(job), within=20, what="the job to give up")
        assert worker.ctx["tries"] == [("m", 1), ("m", 2)]
    info = await job.result_info()
    assert info is not None
    assert not info.success
    assert "max 2 retries exceeded" in str(info.result)
    assert await redis_client.exists("arq:job:m", "arq:retry:m", "arq:in-progress:m") == 0


async def test_a_queued_job_whose_record_expired_is_failed_and_dropped(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    """An id in the queue without its job record: arq's "job expired", and out of the queue."""
    await redis_client.zadd("arq:queue", {"gone": int(time.time() * 1000)})
    async with running(redis_server) as worker:
        await eventually(
            lambda: _not_queued(redis_client, "gone"), within=20, what="the id to leave the queue"
        )
        assert worker.ctx["tries"] == []
        assert worker.jobs_failed == 1
    assert await redis_client.exists("arq:retry:gone", "arq:in-progress:gone") == 0


async def test_a_job_aborted_before_it_started_never_runs(
    redis_server: EmbeddedRedis, pool: ArqRedis, redis_client: aioredis.Redis
) -> None:
    """With ``allow_abort_jobs``, a job in arq's abort set when claimed ends as cancelled."""
    job = await pool.enqueue_job("record", "x", _job_id="x", _defer_by=0.5)
    assert job is not None
    await redis_client.zadd("arq:abort", {"x": int(time.time() * 1000)})
    async with running(redis_server, allow_abort_jobs=True) as worker:
        await eventually(lambda: finished(job), within=20, what="the aborted job to end")
        assert worker.ctx["tries"] == []
    info = await job.result_info()
    assert info is not None
    assert not info.success
    assert isinstance(info.result, asyncio.CancelledError)
    assert await redis_client.zscore("arq:abort", "x") is None


async def _not_queued(redis: aioredis.Redis, job_id: str) -> bool:
    return await redis.zscore("arq:queue", job_id) is None
