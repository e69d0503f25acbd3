"""The dead-letter queue is bounded in count and age, and lets its events' records expire."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from calhooks.workers import keys
from calhooks.workers.deadletter import DeadLetter, DeadLetterQueue
from calhooks.workers.ledger import Ledger


def entry(event_id: str, rule: str = "r", dead_at: float | None = None) -> DeadLetter:
    return DeadLetter(
        event_id=event_id,
        trigger="BOOKING_CREATED",
        rule=rule,
        error={"type": "CalcomError", "message": "400"},
        attempts=1,
        event={"id": event_id},
        dead_at=time.time() if dead_at is None else dead_at,
    )


async def kept_event(redis: aioredis.Redis, event_id: str, *rules: str) -> None:
    """Records as the worker leaves them for a dead-lettered event: no expiry."""
    ledger = Ledger(redis, ttl=60)
    state = await ledger.begin(event_id)
    for rule in rules:
        ledger.set_rule(state, rule, "dead")
    await ledger.keep(state)
    await redis.rpush(keys.eventlog(event_id), b"{}")  # type: ignore[misc]


async def test_past_the_count_the_oldest_entries_go_and_their_records_expire(
    redis_client: aioredis.Redis,
) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=3, max_age=3600, record_ttl=120)
    now = time.time()
    for n in range(5):
        await kept_event(redis_client, f"ev-{n}", "r")
        await dlq.add(entry(f"ev-{n}", dead_at=now - 50 + n))
    assert await dlq.count() == 3
    assert sorted(e.event_id for e in await dlq.page()) == ["ev-2", "ev-3", "ev-4"]
    for gone in ("ev-0", "ev-1"):
        assert 0 < await redis_client.ttl(keys.ledger(gone)) <= 120
        assert 0 < await redis_client.ttl(keys.eventlog(gone)) <= 120
        assert (await Ledger(redis_client, ttl=60).load(gone)).kept is False
    assert await redis_client.ttl(keys.ledger("ev-4")) == -1  # still kept


async def test_entries_older_than_the_age_bound_go_on_the_next_trim(
    redis_client: aioredis.Redis,
) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100, max_age=60, record_ttl=120)
    await kept_event(redis_client, "old", "r")
    await dlq._save(entry("old", dead_at=time.time() - 61))
    await dlq._save(entry("new"))
    dropped = await dlq.trim()
    assert [e.event_id for e in dropped] == ["old"]
    assert [e.event_id for e in await dlq.page()] == ["new"]
    assert await dlq.trim() == []


async def test_an_event_with_another_entry_left_keeps_its_records(
    redis_client: aioredis.Redis,
) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100, max_age=60, record_ttl=120)
    await kept_event(redis_client, "two-rules", "a", "b")
    await dlq._save(entry("two-rules", "a", dead_at=time.time() - 61))
    await dlq._save(entry("two-rules", "b"))
    assert [e.rule for e in await dlq.trim()] == ["a"]
    assert await redis_client.ttl(keys.ledger("two-rules")) == -1
    assert await redis_client.ttl(keys.eventlog("two-rules")) == -1
