"""The queue: JSON jobs, dedupe + enqueue in one script, and a real arq Worker running them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.connections import RedisSettings
from arq.worker import Worker, func

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.events import (
    DEDUPE_PREFIX,
    JOB_FUNCTION,
    Event,
    deserialize_job,
    event_from_body,
    serialize_job,
)
from calhooks.service.intake.queue import Enqueued, EventQueue
from calhooks.service.intake.redispipe import RedisAddress, RedisPipe
from tests.intake.conftest import booking, command, fixture_body

QUEUE = "arq:queue"
WINDOW = 3600


@pytest.fixture
async def queue(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[EventQueue]:
    pipe = RedisPipe(RedisAddress.from_url(redis_server.url))
    yield EventQueue(pipe, queue_name=QUEUE, dedupe_window=WINDOW)
    await pipe.aclose()


def test_job_json_round_trip() -> None:
    """Jobs and results are JSON; values JSON lacks are turned into JSON, not refused."""
    job: dict[str, Any] = {
        "t": None,
        "f": "process_event",
        "a": [{"id": "x", "n": 2**70}],
        "k": {},
        "et": 5,
    }
    assert deserialize_job(serialize_job(job)) == job
    result = deserialize_job(serialize_job({"r": ValueError("bad"), "b": b"\xff", "s": {1}}))
    assert result == {"r": {"error": "ValueError", "message": "bad"}, "b": "\ufffd", "s": [1]}
    assert deserialize_job(serialize_job({"s": "\ud800"})) == {"s": "\ud800"}
    with pytest.raises(ValueError, match="JSON object"):
        deserialize_job(b"[1]")


async def test_enqueue_writes_what_arq_reads(
    queue: EventQueue, redis_client: aioredis.Redis
) -> None:
    """One job per event: arq's job key and queue entry, the dedupe key and a wake token."""
    event = event_from_body(fixture_body("BOOKING_CREATED"), received_at=time.time())
    before = int(time.time() * 1000)
    assert await queue.enqueue(event, deadline=5) is Enqueued.QUEUED
    job = json.loads(await redis_client.get(f"arq:job:{event.id}"))
    assert job["f"] == JOB_FUNCTION
    assert job["a"] == [event.to_dict()]
    assert (job["k"], job["t"]) == ({}, None)
    score = await redis_client.zscore(QUEUE, event.id)
    assert score is not None
    assert before <= score <= time.time() * 1000
    assert await command(redis_client, "LRANGE", f"{QUEUE}:wake", 0, -1) == [b"1"]
    assert 0 < await redis_client.ttl(DEDUPE_PREFIX + event.id) <= WINDOW
    assert WINDOW * 1000 - 5000 < await redis_client.pttl(f"arq:job:{event.id}") <= WINDOW * 1000


async def test_a_repeat_is_a_duplicate_even_after_the_job_is_gone(
    queue: EventQueue, redis_client: aioredis.Redis
) -> None:
    """The dedupe key outlives arq's job and result: a late retry is still not re-queued."""
    event = event_from_body(booking("dup"), received_at=1.0)
    assert await queue.enqueue(event, deadline=5) is Enqueued.QUEUED
    await redis_client.delete(f"arq:job:{event.id}")
    await redis_client.zrem(QUEUE, event.id)
    assert await queue.enqueue(event, deadline=5) is Enqueued.DUPLICATE
    assert await redis_client.zcard(QUEUE) == 0


async def test_an_existing_arq_job_is_never_overwritten(
    queue: EventQueue, redis_client: aioredis.Redis
) -> None:
    """Like enqueue_job: a job or result already under the id wins."""
    event = event_from_body(booking("arq-owned"), received_at=1.0)
    await redis_client.set(f"arq:result:{event.id}", b"{}")
    assert await queue.enqueue(event, deadline=5) is Enqueued.DUPLICATE
    assert await redis_client.exists(f"arq:job:{event.id}") == 0


async def test_concurrent_repeats_queue_once(
    queue: EventQueue, redis_client: aioredis.Redis
) -> None:
    """Many copies of one delivery at the same moment: exactly one is queued."""
    event = event_from_body(booking("race"), received_at=1.0)
    results = await asyncio.gather(*(queue.enqueue(event, deadline=5) for _ in range(50)))
    assert results.count(Enqueued.QUEUED) == 1
    assert await redis_client.zcard(QUEUE) == 1
    assert await command(redis_client, "LLEN", f"{QUEUE}:wake") == 1


async def test_wake_list_is_bounded(queue: EventQueue, redis_client: aioredis.Redis) -> None:
    """The wake list holds at most 64 tokens however many events arrive."""
    events = [event_from_body(booking(f"w{n}"), received_at=1.0) for n in range(100)]
    await asyncio.gather(*(queue.enqueue(e, deadline=5) for e in events))
    assert await command(redis_client, "LLEN", f"{QUEUE}:wake") == 64
    assert await redis_client.zcard(QUEUE) == 100


async def test_ready_jobs_counts_only_jobs_due_now(
    queue: EventQueue, redis_client: aioredis.Redis
) -> None:
    """Deferred jobs (a score in the future) are not part of the backlog."""
    await queue.enqueue(event_from_body(booking("now"), received_at=1.0), deadline=5)
    await redis_client.zadd(QUEUE, {"later": (time.time() + 3600) * 1000})
    assert await queue.ready_jobs(deadline=5) == 1


async def test_a_real_arq_worker_runs_the_queued_events(
    queue: EventQueue, redis_server: EmbeddedRedis
) -> None:
    """arq's Worker with the JSON (de)serializer runs process_event with each event's dict."""
    seen: list[Event] = []

    async def process_event(ctx: dict[str, Any], event: dict[str, Any]) -> str:
        seen.append(Event.from_dict(event))
        return str(event["id"])

    events = [
        event_from_body(fixture_body(name), received_at=time.time())
        for name in ("BOOKING_CREATED", "MEETING_ENDED", "FORM_SUBMITTED")
    ]
    for event in events:
        await queue.enqueue(event, deadline=5)
    worker = Worker(
        functions=[func(process_event, name=JOB_FUNCTION)],
        redis_settings=RedisSettings.from_dsn(redis_server.url),
        queue_name=QUEUE,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
    )
    try:
        await worker.main()
    finally:
        await worker.pool.aclose()
    assert (worker.jobs_complete, worker.jobs_failed) == (3, 0)
    assert sorted(seen, key=lambda e: e.id) == sorted(events, key=lambda e: e.id)
