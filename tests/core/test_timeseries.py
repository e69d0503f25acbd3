"""The per-minute series and the recent-events index the console reads (core modules)."""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from calhooks.service.core import eventindex, timeseries


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_counts_reach_redis_per_minute(redis_client: aioredis.Redis) -> None:
    clock = Clock(600_000.0)
    recorder = timeseries.Recorder(clock)
    recorder.count("intake.accepted")
    recorder.count("intake.accepted")
    clock.now += 60
    recorder.count("intake.accepted")
    recorder.observe_ms("intake.ms", 0.4)
    recorder.observe_ms("intake.ms", 7)
    recorder.observe_ms("intake.ms", 120_000)
    await recorder.flush(redis_client)
    series = await timeseries.read(redis_client, 3, now=clock.now)
    assert series.values("intake.accepted") == [0, 2, 1]
    assert series.total("intake.accepted") == 3
    assert series.quantile("intake.ms", 0.3) == 1.0
    assert series.quantile("intake.ms", 0.5) == 10.0
    assert series.quantile("intake.ms", 0.99) == math.inf
    assert series.quantiles("intake.ms", 0.5) == [None, None, 10.0]
    ttl = await redis_client.ttl(timeseries.minute_key(int(clock.now // 60)))
    assert 0 < ttl <= timeseries.RETENTION_MINUTES * 60 + 60
    await recorder.flush(redis_client)  # nothing pending: nothing counted twice
    assert (await timeseries.read(redis_client, 1, now=clock.now)).total("intake.accepted") == 1


def test_unwritten_minutes_past_retention_are_dropped() -> None:
    clock = Clock(0.0)
    recorder = timeseries.Recorder(clock)
    recorder.count("worker.done")
    clock.now += timeseries.RETENTION_MINUTES * 60
    recorder.count("worker.done")
    assert len(recorder._pending) == 1


def test_event_outcomes() -> None:
    assert eventindex.outcome_of(None, {}) == "running"
    assert eventindex.outcome_of([], {}) == "no_rule"
    assert eventindex.outcome_of(["a", "b"], {"a": "done"}) == "retrying"
    assert eventindex.outcome_of(["a", "b"], {"a": "done", "b": "skipped"}) == "done"
    assert eventindex.outcome_of(["a", "b"], {"a": "dead"}) == "dead_lettered"


async def test_an_event_moves_between_outcome_indexes(redis_client: aioredis.Redis) -> None:
    for outcome in ("running", "done"):
        async with redis_client.pipeline(transaction=False) as pipe:
            eventindex.write_into(
                pipe,
                {"id": "abcdef01", "trigger": "BOOKING_CREATED", "received_at": 1e9 + 5,
                 "outcome": outcome},
                ttl=10**10,
            )  # fmt: skip
            await pipe.execute()
    assert await redis_client.zscore(eventindex.outcome_key("done"), "abcdef01") is not None
    assert await redis_client.zscore(eventindex.outcome_key("running"), "abcdef01") is None
    assert await redis_client.zrange(eventindex.bucket_key("ABCD"), 0, -1) == [b"abcdef01"]
    assert await redis_client.zcard(eventindex.trigger_key("BOOKING_CREATED")) == 1


async def test_gauges_keep_the_last_sample_of_the_minute(redis_client: aioredis.Redis) -> None:
    clock = Clock(600_000.0)
    recorder = timeseries.Recorder(clock)
    recorder.gauge("queue.depth", 5)
    recorder.gauge("queue.depth", 3)
    await recorder.flush(redis_client)
    recorder.gauge("queue.depth", 2)
    await recorder.flush(redis_client)
    series = await timeseries.read(redis_client, 2, now=clock.now)
    assert series.counts[-1]["queue.depth"] == 2
    assert "queue.depth" not in series.counts[0]
