"""A spool that never jams: deep bodies refused at the door, unqueueable records set aside."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from calhooks.service.cli.main import app as cli
from calhooks.service.core.settings import get_settings
from calhooks.service.events import MAX_JSON_DEPTH, event_id
from calhooks.service.intake.spool import Spool, list_quarantine
from tests.intake.conftest import booking, command


def nested(depth: int) -> bytes:
    """A delivery nesting ``depth`` levels in all: the body, its payload, then arrays.

    Written by hand: the standard library's encoder itself gives up long before 1000.
    """
    arrays = depth - 2
    return (
        b'{"triggerEvent":"BOOKING_CREATED","payload":{"deep":'
        + b"[" * arrays
        + b"0"
        + b"]" * arrays
        + b"}}"
    )


@pytest.mark.parametrize(
    ("depth", "status"), [(MAX_JSON_DEPTH, 202), (MAX_JSON_DEPTH + 1, 400), (1000, 400)]
)
def test_nesting_past_the_limit_is_a_bad_body(serve: Any, depth: int, status: int) -> None:
    """Up to MAX_JSON_DEPTH levels is a delivery; deeper is 400 bad_body, never a 503."""
    response = serve().post(nested(depth))
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json() == {
            "error": "bad_body",
            "message": f"body nests deeper than {MAX_JSON_DEPTH} levels",
        }


async def test_an_unqueueable_spooled_record_does_not_block_the_segments_after_it(
    serve: Any, tmp_path: Path, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record left by an older release that raises on replay is quarantined, listed by the
    CLI and counted; the segments before and after it are queued and deleted."""
    spool_dir = tmp_path / "spool"
    left = Spool(spool_dir, max_bytes=64 * 1024 * 1024, segment_bytes=1)  # a segment each
    left.open()
    good = [booking(f"left-{n}") for n in range(4)]
    deep = nested(1000)  # signed and spooled before the depth limit existed
    for body in (good[0], good[1], deep, good[2], good[3]):
        await left.append(time.time(), body)
    await left.aclose()
    assert len(list(spool_dir.glob("*.spool"))) == 5

    served = await asyncio.to_thread(serve, spool_dir=spool_dir)

    async def queued() -> list[str]:
        return sorted(i.decode() for i in await command(redis_client, "ZRANGE", "arq:queue", 0, -1))

    deadline = time.monotonic() + 20
    while await queued() != sorted(event_id(b) for b in good) or list(spool_dir.glob("*.spool")):
        assert time.monotonic() < deadline, "the spool was not replayed past the bad record"
        await asyncio.sleep(0.05)
    metric = await asyncio.to_thread(served.metric, "calhooks_intake_spool_quarantined_total")
    assert metric >= 1

    monkeypatch.setenv("CALHOOKS_SPOOL_DIR", str(spool_dir))
    get_settings.cache_clear()
    try:
        listed = CliRunner().invoke(cli, ["spool", "quarantine"])
        as_json = json.loads(CliRunner().invoke(cli, ["spool", "quarantine", "--json"]).stdout)
    finally:
        get_settings.cache_clear()
    assert listed.exit_code == 0, listed.output
    assert event_id(deep)[:16] in listed.output
    assert f"body nests deeper than {MAX_JSON_DEPTH} levels" in listed.output
    (record,) = as_json
    assert record["event_id"] == event_id(deep)
    assert record["bytes"] == len(deep)


async def test_a_delivery_the_queue_cannot_encode_is_spooled_then_quarantined(
    serve: Any, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a Redis error: the delivery still gets 202 (spooled), and ends up quarantined with
    its reason rather than lost; the deliveries around it are queued."""
    from calhooks.service import events
    from calhooks.service.intake import queue

    encode = events.job_bytes

    def picky(event: Any, enqueue_time_ms: int) -> bytes:
        if event.payload.get("uid") == "unencodable":
            raise TypeError("this job cannot be encoded")
        return encode(event, enqueue_time_ms)

    monkeypatch.setattr(queue, "job_bytes", picky)
    served = await asyncio.to_thread(serve)
    bodies = [booking("before"), booking("unencodable"), booking("after")]
    for body in bodies:
        assert (await asyncio.to_thread(served.post, body)).status_code == 202
    spool_dir = served.intake.spool.directory
    deadline = time.monotonic() + 20
    while not (spool_dir / "quarantine").exists() or list(spool_dir.glob("*.spool")):
        assert time.monotonic() < deadline, "the unencodable delivery was never quarantined"
        await asyncio.sleep(0.05)
    queued = sorted(i.decode() for i in await command(redis_client, "ZRANGE", "arq:queue", 0, -1))
    assert queued == sorted([event_id(bodies[0]), event_id(bodies[2])])
    ((record, reason),) = [(q.event_id, q.reason) for q in list_quarantine(spool_dir)]
    assert record == event_id(bodies[1])
    assert reason == "TypeError: this job cannot be encoded"
