"""Fair scheduling at enqueue: a connection's events are due at its pace past its burst."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.events import Event, event_from_body, event_id
from calhooks.service.intake.acceptor import Acceptor
from calhooks.service.intake.queue import PACE_PREFIX, Enqueued, EventQueue, Pacing
from calhooks.service.intake.redispipe import RedisAddress, RedisPipe
from calhooks.service.intake.spool import Spool
from tests.intake.conftest import booking, make_settings

QUEUE = "arq:queue"
WINDOW = 3600
#: 6 a minute: 10 s apart, far more than an enqueue takes however loaded the machine.
PACE = Pacing(rate=6, burst=5)
INTERVAL = 10_000


@pytest.fixture
async def queue(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[EventQueue]:
    pipe = RedisPipe(RedisAddress.from_url(redis_server.url))
    yield EventQueue(pipe, queue_name=QUEUE, dedupe_window=WINDOW, pacing=PACE)
    await pipe.aclose()


def events(connection: str | None, count: int, tag: str = "") -> list[Event]:
    return [
        event_from_body(booking(f"{tag}{n}"), received_at=1.0, connection=connection)
        for n in range(count)
    ]


async def enqueue_all(queue: EventQueue, batch: list[Event]) -> None:
    for event in batch:
        assert await queue.enqueue(event, deadline=5) is Enqueued.QUEUED


async def scores(client: aioredis.Redis, batch: list[Event]) -> list[float]:
    found = [await client.zscore(QUEUE, event.id) for event in batch]
    assert None not in found
    return [score for score in found if score is not None]


async def test_a_flood_is_due_at_the_connections_pace_after_its_burst(
    queue: EventQueue, redis_client: aioredis.Redis
) -> None:
    """The burst is due now; every event after it one interval after the one before."""
    flood = events("pcid-flood", 12)
    before = int(time.time() * 1000)  # what the queue stamps: whole ms
    await enqueue_all(queue, flood)
    after = time.time() * 1000
    due = await scores(redis_client, flood)
    assert all(before <= score <= after for score in due[:5])
    first_paced = due[5]
    assert before + INTERVAL <= first_paced <= after + INTERVAL
    assert [b - a for a, b in itertools.pairwise(due[5:])] == [INTERVAL] * 6
    # The clock: one interval past the last event's place in the burst window.
    tat = int(await redis_client.get(PACE_PREFIX + "pcid-flood"))
    assert tat == due[-1] + PACE.burst * INTERVAL
    # It expires when it no longer matters (then the next event is due now anyway).
    assert 0 < await redis_client.pttl(PACE_PREFIX + "pcid-flood") <= tat - before
    # A job waiting for its pace is kept the dedupe window past the moment it is due.
    job_ttl = await redis_client.pttl(f"arq:job:{flood[-1].id}")
    assert job_ttl > WINDOW * 1000 + (due[-1] - after) - 5_000
    assert await queue.ready_jobs(deadline=5) == 5


async def test_other_connections_and_the_environment_stay_due_now(
    queue: EventQueue, redis_client: aioredis.Redis
) -> None:
    """A flood of one connection never pushes back another's events, nor the environment's."""
    await enqueue_all(queue, events("pcid-flood", 30))
    before = int(time.time() * 1000)  # what the queue stamps: whole ms
    light = events("pcid-light", 5)
    environment = events(None, 30, tag="env")
    await enqueue_all(queue, light)
    await enqueue_all(queue, environment)
    after = time.time() * 1000
    assert all(before <= score <= after for score in await scores(redis_client, light))
    assert all(before <= score <= after for score in await scores(redis_client, environment))
    # The environment's organization has no clock at all.
    assert sorted(await redis_client.keys(PACE_PREFIX + "*")) == [
        (PACE_PREFIX + name).encode() for name in ("pcid-flood", "pcid-light")
    ]
    assert await queue.ready_jobs(deadline=5) == 5 + 5 + 30


async def test_duplicates_do_not_move_the_clock(
    queue: EventQueue, redis_client: aioredis.Redis
) -> None:
    """A repeat (seen before, or a job arq still holds) is dropped before the clock moves."""
    flood = events("pcid-flood", 8)
    await enqueue_all(queue, flood)
    key = PACE_PREFIX + "pcid-flood"
    tat = await redis_client.get(key)
    for event in flood:
        assert await queue.enqueue(event, deadline=5) is Enqueued.DUPLICATE
    held = events("pcid-flood", 1, tag="held")[0]
    await redis_client.set(f"arq:result:{held.id}", b"{}")
    assert await queue.enqueue(held, deadline=5) is Enqueued.DUPLICATE
    assert await redis_client.get(key) == tat
    following = events("pcid-flood", 1, tag="next")
    await enqueue_all(queue, following)
    last, new = await scores(redis_client, [flood[-1], *following])
    assert new - last == INTERVAL


async def test_without_pacing_every_event_is_due_now(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    """No ``pacing`` (``CALHOOKS_CONNECTION_RATE=0``): a connection's flood is all due now."""
    pipe = RedisPipe(RedisAddress.from_url(redis_server.url))
    try:
        queue = EventQueue(pipe, queue_name=QUEUE, dedupe_window=WINDOW)
        flood = events("pcid-flood", 20)
        before = int(time.time() * 1000)  # what the queue stamps: whole ms
        await enqueue_all(queue, flood)
        after = time.time() * 1000
    finally:
        await pipe.aclose()
    assert all(before <= score <= after for score in await scores(redis_client, flood))
    assert await redis_client.keys(PACE_PREFIX + "*") == []


def test_pacing_comes_from_the_settings(tmp_path: Path) -> None:
    """120 a minute after 120 at once by default; a rate of 0 turns pacing off."""
    default = Pacing.from_settings(make_settings(tmp_path, "redis://localhost:1"))
    assert default == Pacing(rate=120, burst=120)
    assert default.interval_ms == 500
    custom = make_settings(tmp_path, "redis://x:1", connection_rate=7, connection_burst=3)
    assert Pacing.from_settings(custom) == Pacing(rate=7, burst=3)
    assert Pacing(rate=7, burst=3).interval_ms == 8571
    assert Pacing.from_settings(make_settings(tmp_path, "redis://x:1", connection_rate=0)) is None


async def test_replayed_spool_records_are_paced_like_live_ones(
    queue: EventQueue, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A connection's deliveries spooled during an outage are paced when replayed: the burst
    due now, the rest one interval apart; the environment's are all due now."""
    spool = Spool(tmp_path / "spool", max_bytes=10 * 1024 * 1024)
    spool.open()
    flood = [booking(f"spooled{n}") for n in range(8)]
    for raw in flood:
        await spool.append(1.0, raw, "pcid-flood")
    for n in range(8):
        await spool.append(1.0, booking(f"env{n}"))
    acceptor = Acceptor(queue, spool, deadline=5)
    try:
        before = int(time.time() * 1000)
        assert await acceptor.drain() == 16
        after = time.time() * 1000
    finally:
        await spool.aclose()
    ids = [event_id(raw, "pcid-flood") for raw in flood]
    due = sorted([await redis_client.zscore(QUEUE, i) or 0.0 for i in ids])
    assert all(before <= score <= after for score in due[:5])
    assert before + INTERVAL <= due[5] <= after + INTERVAL
    assert [b - a for a, b in itertools.pairwise(due[5:])] == [INTERVAL] * 2
    environment = [event_id(booking(f"env{n}")) for n in range(8)]
    stamped = [await redis_client.zscore(QUEUE, i) or 0.0 for i in environment]
    assert all(before <= score <= after for score in stamped)
