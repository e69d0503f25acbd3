"""Rolling upgrades: records the previous release (52bd3ec) wrote are processed right by this
one, and what a newer release writes is left alone.

``tests/fixtures/upgrade/52bd3ec.json`` is every Redis key that release's own worker code and
job encoder left (``upgrade_capture.py`` run on its tree): a finished event, one interrupted
between its create and the create's record, a dead-lettered one, and a queued job.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq import Retry

from calhooks.service.calcom import CalcomClient
from calhooks.service.events import EVENT_FORMAT, Event, NewerFormat, deserialize_job
from calhooks.service.sandbox import SANDBOX_ORG_ID
from calhooks.workers import keys
from calhooks.workers.bootstrap import _parse_event
from calhooks.workers.deadletter import DeadLetterQueue, replay
from calhooks.workers.eventlog import CallLog, EventLog
from calhooks.workers.formats import DEAD_LETTER_FORMAT, LEDGER_FORMAT
from calhooks.workers.gates import GateChain
from calhooks.workers.jobs import Processor, process_event
from calhooks.workers.ledger import Ledger
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.retries import RetryPolicy
from calhooks.workers.rules import parse_rules
from tests.sandbox.server import RunningSandbox

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade" / "52bd3ec.json"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"


@pytest.fixture
def release() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


async def restore(redis: aioredis.Redis, release: dict[str, Any]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for key, item in release["keys"].items():
            kind, value = item["type"], item["value"]
            if kind == "string":
                pipe.set(key, value)
            elif kind == "hash":
                pipe.hset(key, mapping=value)
            elif kind == "list":
                pipe.rpush(key, *value)
            elif kind == "zset":
                pipe.zadd(key, {member: score for member, score in value})
            if item["expires"]:
                pipe.expire(key, 3600)
        await pipe.execute()


async def recreate_ooo(client: CalcomClient, release: dict[str, Any]) -> None:
    """The OOO entries that release's runs created in Cal.com."""
    for entry in release["ooo"]:
        await client.call(
            CREATE_OOO,
            userId=entry["user_id"],
            start=_utc(entry["start"]),
            end=_utc(entry["end"]),
            notes=entry["notes"],
            reason=entry["reason"],
        )


def _utc(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def processor(redis: aioredis.Redis, client: CalcomClient, release: dict[str, Any]) -> Processor:
    ruleset = parse_rules(release["rules"], env={"org_id": SANDBOX_ORG_ID})
    return Processor(
        rules=lambda: ruleset,
        client=client,
        ledger=Ledger(redis, ttl=3600),
        dead_letters=DeadLetterQueue(redis),
        eventlog=EventLog(redis, ttl=3600),
        order=BookingOrder(redis, wait=0.0, lock_wait=0.05),
        policy=RetryPolicy(3, 10.0, 100.0),
        job_timeout=30,
        worker_name="next-release",
    )


async def test_records_of_the_previous_release_are_processed_right(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, release: dict[str, Any]
) -> None:
    await restore(redis_client, release)
    events = {name: Event.from_dict(data) for name, data in release["events"].items()}
    assert all("v" not in data for data in release["events"].values())  # before versioning
    async with sandbox.client(gate=GateChain(CallLog())) as client:
        await recreate_ooo(client, release)
        sandbox.sandbox.requests.clear()
        work = processor(redis_client, client, release)

        # Finished by the old release: run again (arq's at-least-once), nothing is called.
        assert await work.process(events["done"]) == {"rules": {"time-off": "done"}}
        assert sandbox.requests() == []

        # Interrupted after its create reached Cal.com: the finder adopts it, no second create.
        assert await work.process(events["interrupted"]) == {"rules": {"time-off": "done"}}
        assert sandbox.requests(CREATE_OOO) == []
        records = await EventLog(redis_client, ttl=60).read(events["interrupted"].id)
        assert ("ooo", "found") in [(r["step"], r.get("how")) for r in records if "step" in r]
        assert records[0]["worker"] == "release-worker"  # the old release's records are kept

        # The job the old intake queued: read with this release's job decoder, processed once.
        job = deserialize_job(release["keys"][f"arq:job:{events['queued'].id}"]["value"].encode())
        queued = _parse_event(job["a"][0])
        assert await work.process(queued) == {"rules": {"time-off": "done"}}
        assert len(sandbox.requests(CREATE_OOO)) == 1

        # The old dead letter lists, replays and fails again (the organizer is still unknown).
        dlq = DeadLetterQueue(redis_client)
        [entry] = await dlq.page()
        assert (entry.event_id, entry.v) == (events["dead"].id, 1)
        arq = SimpleNamespace(
            delete=redis_client.delete,
            enqueue_job=_enqueued,
            pipeline=redis_client.pipeline,
        )
        await replay(entry, dlq=dlq, ledger=work.ledger, arq=arq, queue_name="q")  # type: ignore[arg-type]
        assert await work.process(events["dead"]) == {"rules": {"time-off": "dead"}}
        [again] = await dlq.page()
        assert (again.replays, again.v) == (1, DEAD_LETTER_FORMAT)
    notes = [entry.notes for entry in sandbox.store.ooo.values()]
    for uid in ("up-done", "up-int", "up-queued"):
        assert notes.count(f"upgrade {uid}") == 1, uid
    state = await Ledger(redis_client, ttl=60).load(events["done"].id)
    assert state.format == 1  # a ledger without ``v`` reads as format 1


async def _enqueued(*args: Any, **kwargs: Any) -> object:
    return object()


async def test_a_job_in_a_newer_format_waits_for_a_newer_worker_untouched(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, release: dict[str, Any]
) -> None:
    data = {**release["events"]["queued"], "v": EVENT_FORMAT + 1}
    with pytest.raises(NewerFormat):
        Event.from_dict(data)
    async with sandbox.client(gate=GateChain(CallLog())) as client:
        runtime = SimpleNamespace(
            parse_event=_parse_event, processor=processor(redis_client, client, release)
        )
        with pytest.raises(Retry):
            await process_event({"calhooks": runtime}, data)
    assert not await redis_client.exists(keys.ledger(data["id"]))
    assert sandbox.requests() == []


async def test_a_ledger_in_a_newer_format_defers_the_attempt(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, release: dict[str, Any]
) -> None:
    event = Event.from_dict(release["events"]["queued"])
    await redis_client.hset(keys.ledger(event.id), mapping={"v": str(LEDGER_FORMAT + 1)})  # type: ignore[misc]
    async with sandbox.client(gate=GateChain(CallLog())) as client:
        with pytest.raises(Retry):
            await processor(redis_client, client, release).process(event)
    assert sandbox.requests() == []
    fresh = await Ledger(redis_client, ttl=60).load(event.id)
    assert fresh.rules == {}


async def test_this_release_writes_its_formats(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, release: dict[str, Any]
) -> None:
    event = Event.from_dict(release["events"]["queued"])
    assert event.to_dict()["v"] == EVENT_FORMAT
    async with sandbox.client(gate=GateChain(CallLog())) as client:
        await processor(redis_client, client, release).process(event)
    assert (await Ledger(redis_client, ttl=60).load(event.id)).format == LEDGER_FORMAT
    [attempt] = [
        r for r in await EventLog(redis_client, ttl=60).read(event.id) if r["kind"] == "attempt"
    ]
    assert attempt["v"] == 1


async def test_a_dead_letter_in_a_newer_format_is_listed_but_not_replayed(
    redis_client: aioredis.Redis, release: dict[str, Any]
) -> None:
    await restore(redis_client, release)
    dlq = DeadLetterQueue(redis_client)
    [entry] = await dlq.page()
    entry.v = DEAD_LETTER_FORMAT + 1
    await dlq._save(entry)
    [listed] = await dlq.page()
    assert listed.v == DEAD_LETTER_FORMAT + 1
    with pytest.raises(NewerFormat):
        await replay(listed, dlq=dlq, ledger=Ledger(redis_client, ttl=60), arq=None, queue_name="q")  # type: ignore[arg-type]
