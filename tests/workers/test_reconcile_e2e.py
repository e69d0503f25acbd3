"""Reconciliation over real processes: the sandbox, `calhooks serve` and `calhooks worker`s
with a 1-second reconciliation period. A time-off booking whose deliveries never arrive
still gets its OOO entry, exactly once, and loses it when cancelled; a delivered booking is
not recovered a second time (docs/reconciliation.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.sandbox import SANDBOX_ORG_ID
from calhooks.workers.redistyped import hget
from tests.sandbox.server import RunningSandbox
from tests.workers.processes import Process, environment, start_intake, start_worker
from tests.workers.test_bookings_e2e import (
    ALICE,
    BOB,
    CREATE_OOO,
    DELETE_OOO,
    EXAMPLES,
    SECRET,
    UPDATE_OOO,
    Stack,
    eventually,
)

pytestmark = pytest.mark.slow

STATE = f"calhooks:reconcile:{SANDBOX_ORG_ID}:state"
LOCK = f"calhooks:reconcile:{SANDBOX_ORG_ID}:lock"


async def passes(redis: aioredis.Redis) -> int:
    return int(await hget(redis, STATE, "passes") or 0)


async def more_passes(redis: aioredis.Redis, count: int) -> None:
    """Wait until the workers have made ``count`` more complete passes."""
    start = await passes(redis)

    async def enough() -> bool:
        return await passes(redis) >= start + count

    await eventually(enough, what=f"{count} more reconciliation passes")


async def test_lost_deliveries_are_recovered_once_and_delivered_ones_not_again(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    env = environment(
        redis_server.url,
        sandbox.url,
        EXAMPLES,
        webhook_secrets=SECRET,
        worker_ordering_wait=5,
        reconcile_period=1,
        reconcile_grace=0,
        # 10 list calls per 1-second pass: every pass lists everything (5 kinds, a page each).
        worker_rate_limit_per_minute=1200,
        reconcile_rate_share=0.5,
    )
    for name in ("w1", "w2"):
        processes.append(start_worker(name, env, tmp_path))
    intake = start_intake(env, tmp_path)
    processes.append(intake)
    # No webhook is subscribed: every change is lost unless the test delivers it itself.
    stack = Stack(sandbox, redis_client, intake)
    await more_passes(redis_client, 1)
    assert await hget(redis_client, STATE, "bookings:baseline") == b"1"

    # Bob's booking is delivered and processed while no pass can run (the test holds the
    # lock), so a pass never races its delivery.
    assert await redis_client.set(LOCK, "test", nx=True, px=60_000)
    bobs = await stack.change(
        "/bookings", change="create", user="bob", eventType="time-off", orgId=SANDBOX_ORG_ID
    )
    delivered = await stack.deliver(bobs)
    await eventually(lambda: stack.done(delivered), what="bob's delivered booking")
    assert len(stack.entries(BOB)) == 1
    await redis_client.delete(LOCK)

    # Alice's booking is never delivered.
    alices = await stack.change(
        "/bookings", change="create", user="alice", eventType="time-off", orgId=SANDBOX_ORG_ID
    )
    assert alices.get("deliveries", []) == []
    await eventually(lambda: len(stack.entries(ALICE)) == 1, what="alice's recovered entry")
    [entry] = stack.entries(ALICE)
    assert alices["booking"]["uid"] in (entry.notes or "")
    await more_passes(redis_client, 3)
    assert len(stack.entries(ALICE)) == 1
    assert stack.calls(CREATE_OOO, ALICE) == 1
    assert stack.calls(UPDATE_OOO, ALICE) == 0
    assert len(stack.entries(BOB)) == 1
    assert stack.calls(CREATE_OOO, BOB) == 1
    assert stack.calls(UPDATE_OOO, BOB) == 0  # not recovered: no second run of the rule

    # Its cancellation is lost too, and still removes the entry.
    await stack.change(
        f"/bookings/{alices['booking']['uid']}/cancel", orgId=SANDBOX_ORG_ID, reason="no"
    )
    await eventually(lambda: stack.entries(ALICE) == [], what="alice's entry to go")
    await more_passes(redis_client, 2)
    assert stack.calls(DELETE_OOO, ALICE) == 1
    assert stack.calls(CREATE_OOO, ALICE) == 1
