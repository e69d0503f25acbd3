"""The event log: records in order, secrets masked, tool names readable, TTL or kept."""

from __future__ import annotations

import redis.asyncio as aioredis

from calhooks.workers.eventlog import EventLog

TOOL = "cal_organizations_users_ooocontroller_create_organization_user_ooo"


async def test_records_keep_tool_names_and_mask_secrets(redis_client: aioredis.Redis) -> None:
    """Tool names (cal_organizations_...) survive; API keys and secret fields do not."""
    log = EventLog(redis_client, ttl=60)
    recorder = log.recorder("ev1")
    recorder.add("step", tool=TOOL, how="called")
    recorder.add("rule", error={"message": "key cal_live_0123456789abcdef refused"})
    recorder.add("call", tool=TOOL, params={"secret": "whsec_123456", "userId": 7})
    await recorder.flush()
    records = await log.read("ev1")
    assert [r["kind"] for r in records] == ["step", "rule", "call"]
    assert records[0]["tool"] == TOOL
    assert records[1]["error"]["message"] == "key [REDACTED] refused"
    assert records[2]["params"] == {"secret": "[REDACTED]", "userId": 7}


async def test_a_kept_log_does_not_expire(redis_client: aioredis.Redis) -> None:
    """A log kept for a dead letter has no TTL; released, it expires again."""
    log = EventLog(redis_client, ttl=60)
    recorder = log.recorder("ev1")
    recorder.kept = True
    recorder.add("attempt", attempt=1)
    await recorder.flush()
    assert await redis_client.ttl("calhooks:eventlog:ev1") == -1
    recorder.kept = False
    recorder.add("done")
    await recorder.flush()
    assert 0 < await redis_client.ttl("calhooks:eventlog:ev1") <= 60


async def test_an_empty_flush_writes_nothing(redis_client: aioredis.Redis) -> None:
    """Flushing with nothing buffered costs no Redis write."""
    await EventLog(redis_client, ttl=60).recorder("ev1").flush()
    assert await redis_client.exists("calhooks:eventlog:ev1") == 0
