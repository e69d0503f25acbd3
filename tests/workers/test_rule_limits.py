"""A rule over its budget is dead-lettered with the reason, and other events keep flowing."""

from __future__ import annotations

import redis.asyncio as aioredis

from calhooks.workers.deadletter import DeadLetterQueue
from calhooks.workers.eventlog import CallLog, EventLog
from calhooks.workers.gates import GateChain
from calhooks.workers.jobs import Processor
from calhooks.workers.ledger import Ledger
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.retries import RetryPolicy
from tests.rules.helpers import rules
from tests.sandbox.server import RunningSandbox
from tests.workers.test_jobs import FakeEvent

RULES = """
rules:
  - name: scan
    on: BOOKING_CREATED
    steps:
      - tool: cal_organizations_users_controller_get_organizations_users
        when: payload.items.exists(a, payload.items.exists(b, a.n == b.n + 100000))
        with:
          emails: ["bob@acme.example"]
"""


async def test_an_event_over_the_budget_is_dead_lettered_while_the_next_one_runs(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    ruleset = rules(RULES, env={"org_id": 1})
    async with sandbox.client(gate=GateChain(CallLog())) as client:
        processor = Processor(
            rules=lambda: ruleset,
            client=client,
            ledger=Ledger(redis_client, ttl=600),
            dead_letters=DeadLetterQueue(redis_client),
            eventlog=EventLog(redis_client, ttl=600),
            order=BookingOrder(redis_client, wait=0.0, lock_wait=0.05),
            policy=RetryPolicy(3, 10.0, 100.0),
            job_timeout=30,
            worker_name="test-worker",
        )
        heavy = FakeEvent("ev-heavy", "BOOKING_CREATED", {"items": [{"n": i} for i in range(3000)]})
        light = FakeEvent("ev-light", "BOOKING_CREATED", {"items": [{"n": 1}, {"n": 100001}]})
        assert await processor.process(heavy) == {"rules": {"scan": "dead"}}
        assert await processor.process(light) == {"rules": {"scan": "done"}}
    [entry] = await DeadLetterQueue(redis_client).page()
    assert entry.event_id == "ev-heavy"
    assert entry.error["type"] == "BudgetExceeded"
    assert "CALHOOKS_RULES_COST_LIMIT" in entry.error["message"]
    lookups = sandbox.requests("cal_organizations_users_controller_get_organizations_users")
    assert len(lookups) == 1  # the light event's
