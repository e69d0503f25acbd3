"""Redis outages: deliveries spooled and answered 202, replayed when Redis returns, none lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.events import event_id
from tests.intake.conftest import booking, command, compact
from tests.waiting import eventually


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test alone, which it may kill and restart on the same port."""
    with EmbeddedRedis(directory=tmp_path / "redis") as server:
        yield server


async def queued_ids(url: str) -> list[str]:
    client = aioredis.Redis.from_url(url)
    try:
        return sorted(i.decode() for i in await command(client, "ZRANGE", "arq:queue", 0, -1))
    finally:
        await client.aclose()


async def test_killed_redis_deliveries_are_spooled_then_replayed_once(
    serve: Any, own_redis: EmbeddedRedis
) -> None:
    """Redis killed mid-test: 202s from the spool; after a restart every event queued once."""
    served = serve(redis_url=own_redis.url)
    before = booking("before")
    assert served.post(before).status_code == 202
    own_redis.stop()
    during = [booking(f"during-{n}") for n in range(20)]
    answers = [served.post(body) for body in during]
    assert [a.status_code for a in answers] == [202] * 20
    assert [a.json()["id"] for a in answers] == [event_id(b) for b in during]
    # The same deliveries again, and one already queued before the outage: spooled too.
    assert served.post(during[0]).status_code == 202
    assert served.post(before).status_code == 202
    assert served.intake.spool.size > 0
    ready = served.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["deliveries_to"] == "spool"

    own_redis.start()
    expected = sorted(event_id(b) for b in [before, *during])

    async def replayed() -> bool:
        return await queued_ids(own_redis.url) == expected and served.intake.spool.size == 0

    await eventually(replayed, what="the spool to be replayed")
    assert list((served.intake.spool.directory).glob("*.spool")) == []
    after = booking("after")
    assert served.post(after).status_code == 202
    assert served.post(during[1]).json() == {"id": event_id(during[1]), "duplicate": True}
    assert len(await queued_ids(own_redis.url)) == 22
    metrics = served.get("/metrics").text
    assert 'calhooks_intake_spool_replayed_total{result="duplicate"}' in metrics
    assert "calhooks_intake_redis_up 1.0" in metrics


async def stalled(url: str) -> bool:
    """Whether Redis leaves a PING unanswered for 50 ms (it is busy in DEBUG SLEEP)."""
    async with aioredis.Redis.from_url(url, socket_timeout=0.05) as probe:
        try:
            await probe.ping()
        except (TimeoutError, aioredis.TimeoutError):
            return True
    return False


async def test_slow_redis_past_the_deadline_spools_without_double_queueing(
    serve: Any, own_redis: EmbeddedRedis
) -> None:
    """Redis too slow to answer in time: the delivery is spooled; it ends up queued once."""
    served = serve(redis_url=own_redis.url, redis_deadline=0.2)
    assert served.post(booking("warm")).status_code == 202
    spooled = 'calhooks_intake_deliveries_total{outcome="spooled"}'
    spooled_before = served.metric(spooled)
    blocker = aioredis.Redis.from_url(own_redis.url)
    stall = asyncio.create_task(command(blocker, "DEBUG", "SLEEP", "3.0"))
    await eventually(lambda: stalled(own_redis.url), what="Redis to stall")
    slow = booking("slow")
    response = await asyncio.to_thread(served.post, slow)
    assert response.status_code == 202
    assert not stall.done()  # answered while Redis was still stalled...
    await stall
    assert await asyncio.to_thread(served.metric, spooled) == spooled_before + 1  # ...from disk
    await blocker.aclose()
    expected = sorted([event_id(booking("warm")), event_id(slow)])

    async def settled() -> bool:
        return await queued_ids(own_redis.url) == expected and served.intake.spool.size == 0

    await eventually(settled, what="the slow delivery to be queued")


def test_no_redis_and_a_full_spool_gets_503(serve: Any, own_redis: EmbeddedRedis) -> None:
    """With Redis down, deliveries fill the spool; past its limit they get 503 + Retry-After."""
    served = serve(redis_url=own_redis.url, spool_max_bytes=1024 * 1024)
    own_redis.stop()
    statuses = []
    for n in range(14):
        body = compact(
            {"triggerEvent": "BOOKING_CREATED", "payload": {"n": n, "pad": "p" * 100_000}}
        )
        response = served.post(body)
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["retry-after"].isdigit()
            assert response.json()["error"] == "unavailable"
            break
    assert statuses[:10] == [202] * 10
    assert statuses[-1] == 503


def test_no_redis_and_no_spool_gets_503(
    serve: Any, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """With Redis down and a spool directory that cannot exist: 503, never a lost 202."""
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    served = serve(redis_url=own_redis.url, spool_dir=blocker / "spool")
    own_redis.stop()
    response = served.post(booking("nowhere"))
    assert response.status_code == 503
    assert "retry-after" in response.headers
