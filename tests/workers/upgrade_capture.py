"""Capture the Redis records a release writes, for the rolling-upgrade test (test_upgrade.py).

Run with an older release's tree first on the import path, e.g. for 52bd3ec::

    mkdir /tmp/old && git archive 52bd3ec | tar -x -C /tmp/old
    cd /tmp/old && PYTHONPATH=/tmp/old /path/to/.venv/bin/python \\
        /path/to/tests/workers/upgrade_capture.py /path/to/tests/fixtures/upgrade/52bd3ec.json

It runs that release's own worker code (``Processor``, ledger, dead-letter queue, delivery
log, booking order) and job encoder against a sandbox and a fresh Redis, and writes every key
it left, plus the sandbox's OOO entries, as JSON:

* ``done``: a time-off event processed to the end;
* ``interrupted``: the same, then put back to the state a worker killed between the create
  reaching Cal.com and its ``done`` record leaves (step ``started``, the run not ended);
* ``dead``: an event whose rule failed for good (dead letter, records kept);
* ``queued``: a job as that release's intake queues it, not yet run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.events import job_bytes, normalise
from calhooks.service.sandbox import SANDBOX_ORG_ID, create_app
from calhooks.workers.deadletter import DeadLetterQueue
from calhooks.workers.eventlog import CallLog, EventLog
from calhooks.workers.gates import GateChain
from calhooks.workers.jobs import Processor
from calhooks.workers.ledger import Ledger
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.redistyped import hgetall, lrange
from calhooks.workers.retries import RetryPolicy
from calhooks.workers.rules import parse_rules
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app

RULES = """
rules:
  - name: time-off
    on: BOOKING_CREATED
    steps:
      - id: user
        tool: cal_organizations_users_controller_get_organizations_users
        with:
          emails: ["${{ payload.organizer.email }}"]
      - id: ooo
        tool: cal_organizations_users_ooocontroller_create_organization_user_ooo
        with:
          userId: ${{ steps.user[0].id }}
          start: ${{ payload.startTime }}
          end: ${{ payload.endTime }}
          reason: vacation
          notes: "upgrade ${{ payload.uid }}"
"""


def body(uid: str, organizer: str, day: int) -> dict[str, Any]:
    return {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2031-05-01T08:00:00.000Z",
        "payload": {
            "type": "time-off",
            "uid": uid,
            "startTime": f"2033-03-{day:02d}T00:00:00Z",
            "endTime": f"2033-03-{day:02d}T12:00:00Z",
            "organizer": {"email": organizer, "name": "Someone"},
            "attendees": [],
        },
    }


def event_of(data: dict[str, Any]) -> Any:
    raw = json.dumps(data, separators=(",", ":")).encode()
    from calhooks.service.events import event_id

    return normalise(data, id=event_id(raw), received_at=time.time())


async def dump(redis: aioredis.Redis) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for raw_key in sorted(await redis.keys("*")):
        key = raw_key.decode()
        kind = (await redis.type(raw_key)).decode()
        value: Any
        if kind == "string":
            value = (await redis.get(raw_key)).decode()
        elif kind == "hash":
            value = {k.decode(): v.decode() for k, v in (await hgetall(redis, key)).items()}
        elif kind == "list":
            value = [item.decode() for item in await lrange(redis, key, 0, -1)]
        elif kind == "zset":
            value = [
                [m.decode(), s] for m, s in await redis.zrange(raw_key, 0, -1, withscores=True)
            ]
        else:
            continue
        found[key] = {"type": kind, "value": value, "expires": await redis.ttl(raw_key) > 0}
    return found


async def capture() -> dict[str, Any]:
    app = create_app()
    with EmbeddedRedis() as server, serve_app(app) as url:
        sandbox = RunningSandbox(url, app, app.state.sandbox)
        sandbox.sandbox.reset(seeded=True)
        redis = aioredis.Redis.from_url(server.url)
        ruleset = parse_rules(RULES, env={"org_id": SANDBOX_ORG_ID})
        events = {
            "done": event_of(body("up-done", "alice@acme.example", 1)),
            "interrupted": event_of(body("up-int", "alice@acme.example", 2)),
            "dead": event_of(body("up-dead", "nobody@acme.example", 3)),
            "queued": event_of(body("up-queued", "alice@acme.example", 4)),
        }
        async with sandbox.client(gate=GateChain(CallLog())) as client:
            processor = Processor(
                rules=lambda: ruleset,
                client=client,
                ledger=Ledger(redis, ttl=3600),
                dead_letters=DeadLetterQueue(redis),
                eventlog=EventLog(redis, ttl=3600),
                order=BookingOrder(redis, wait=0.0, lock_wait=0.05),
                policy=RetryPolicy(3, 10.0, 100.0),
                job_timeout=30,
                worker_name="release-worker",
            )
            for name in ("done", "interrupted", "dead"):
                print(name, await processor.process(events[name]))
        # A kill between the create reaching Cal.com and its record: started, run not ended.
        interrupted = f"calhooks:ledger:{events['interrupted'].id}"
        step = next(f.decode() for f in await redis.hkeys(interrupted) if b'"ooo"' in f)
        started = json.loads(await redis.hget(interrupted, step))
        await redis.hset(interrupted, step, json.dumps({"state": "started", "at": started["at"]}))
        await redis.hdel(interrupted, "rule:time-off")
        await redis.hincrby(interrupted, "ends", -1)
        booking = events["interrupted"].payload["uid"]
        await redis.hdel(f"calhooks:booking:{booking}", "created", "last_event", "last")
        await redis.zadd(f"calhooks:booking:{booking}:pending", {events["interrupted"].id: 1.0})
        now_ms = int(time.time() * 1000)
        queued = events["queued"]
        await redis.psetex(f"arq:job:{queued.id}", 3_600_000, job_bytes(queued, now_ms))
        await redis.zadd("arq:queue", {queued.id: now_ms})
        keys = await dump(redis)
        await redis.aclose()
        ooo = [
            {
                "user_id": entry.user_id,
                "start": entry.start.isoformat(),
                "end": entry.end.isoformat(),
                "notes": entry.notes,
                "reason": entry.reason,
            }
            for entry in sandbox.store.ooo.values()
            if (entry.notes or "").startswith("upgrade ")
        ]
    return {
        "rules": RULES,
        "events": {name: event.to_dict() for name, event in events.items()},
        "keys": keys,
        "ooo": ooo,
    }


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asyncio.run(capture()), indent=1, sort_keys=True) + "\n")
