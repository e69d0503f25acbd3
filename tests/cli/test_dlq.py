"""`calhooks dlq` and `calhooks events show` against a real Redis."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from calhooks.service.cli.events import collapse, describe
from calhooks.service.cli.main import app
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.settings import get_settings
from calhooks.workers.deadletter import DeadLetter, DeadLetterQueue
from calhooks.workers.eventlog import EventLog
from calhooks.workers.ledger import Ledger
from calhooks.workers.redistyped import lrange
from tests.workers.helpers import end_now

runner = CliRunner()
T = TypeVar("T")


def event(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "trigger": "BOOKING_CREATED",
        "created_at": "2031-05-01T08:00:00.000Z",
        "payload": {"uid": "bk-1"},
        "raw": {"triggerEvent": "BOOKING_CREATED", "payload": {"uid": "bk-1"}},
        "received_at": time.time(),
    }


def dead_letter(event_id: str, rule: str = "time-off", **extra: Any) -> DeadLetter:
    return DeadLetter(
        event_id=event_id,
        trigger="BOOKING_CREATED",
        rule=rule,
        error={
            "type": "CalcomError",
            "status": 400,
            "code": "BadRequestException",
            "message": "no",
        },
        attempts=1,
        event=event(event_id),
        step="ooo",
        tool="cal_organizations_users_ooocontroller_create_organization_user_ooo",
        params={"userId": 7, "secret": "whsec_do_not_show"},
        **extra,
    )


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CALHOOKS_REDIS_URL", redis_server.url)
    get_settings.cache_clear()

    async def flush() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        await client.flushall()
        await client.aclose()

    asyncio.run(flush())
    yield redis_server.url
    get_settings.cache_clear()


def on_redis(url: str, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = aioredis.Redis.from_url(url)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def add_dead(redis: aioredis.Redis, *entries: DeadLetter) -> None:
    ledger = Ledger(redis, ttl=600)
    for entry in entries:
        await DeadLetterQueue(redis).add(entry)
        state = await ledger.begin(entry.event_id)
        ledger.set_rule(state, entry.rule, "dead")
        await ledger.keep(state)
        await end_now(ledger, state)


def test_list_and_show_entries_with_secrets_redacted(redis_url: str) -> None:
    """`dlq list` shows one line per entry; `dlq show` prints it with secrets masked."""
    first, second = dead_letter("a" * 64), dead_letter("b" * 64, dead_at=time.time() + 1)
    on_redis(redis_url, lambda r: add_dead(r, first, second))
    listed = runner.invoke(app, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [second.id, first.id]
    assert "400 BadRequestException: no" in lines[0]
    assert f"event {first.event_id[:16]}" in lines[1]
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", lines[0])
    shown = runner.invoke(app, ["dlq", "show", first.id[:6], "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert (data["id"], data["rule"], data["step"]) == (first.id, "time-off", "ooo")
    assert data["params"] == {"userId": 7, "secret": "[REDACTED]"}
    assert data["dead_at"].endswith("+00:00")
    text = runner.invoke(app, ["dlq", "show", first.id[:6]])
    assert text.exit_code == 0, text.output
    assert f"event    {first.event_id}" in text.stdout
    assert "failed   rule time-off, step ooo" in text.stdout
    assert 'secret: "[REDACTED]"' in text.stdout
    assert f"calhooks dlq replay {first.id}" in text.stdout


def test_replay_reopens_the_rule_and_queues_the_event(redis_url: str) -> None:
    """`dlq replay ID` queues the event under its id, wakes a worker, marks the entry."""
    entry = dead_letter("c" * 64)
    on_redis(redis_url, lambda r: add_dead(r, entry))
    replayed = runner.invoke(app, ["dlq", "replay", entry.id])
    assert replayed.exit_code == 0, replayed.output
    assert "Queued 1 event(s) again" in replayed.stdout

    async def check(redis: aioredis.Redis) -> None:
        assert await redis.zscore("arq:queue", entry.event_id) is not None
        job = json.loads(await redis.get(f"arq:job:{entry.event_id}"))
        assert (job["f"], job["a"]) == ("process_event", [entry.event])
        assert await lrange(redis, "arq:queue:wake", 0, -1) == [b"1"]
        state = await Ledger(redis, ttl=600).load(entry.event_id)
        assert "time-off" not in state.rules
        stored = await DeadLetterQueue(redis).get(entry.id)
        assert stored is not None
        assert (stored.status, stored.replays) == ("replaying", 1)

    on_redis(redis_url, check)
    again = runner.invoke(app, ["dlq", "replay", entry.id])
    assert "1 already queued or running" in again.stdout


def test_bulk_replay_reports_progress(redis_url: str) -> None:
    """`dlq replay --all` replays every entry and reports progress on stderr."""
    entries = [dead_letter(f"{i:064x}") for i in range(60)]
    on_redis(redis_url, lambda r: add_dead(r, *entries))
    result = runner.invoke(app, ["dlq", "replay", "--all"])
    assert result.exit_code == 0, result.output
    assert "replayed 50/60" in result.stderr
    assert "replayed 60/60" in result.stderr
    assert "Queued 60 event(s) again" in result.stdout


def test_drop_forgets_entries_and_lets_the_ledger_expire(redis_url: str) -> None:
    """`dlq drop ID` removes the entry; with no entry left the event's ledger expires again."""
    entry = dead_letter("d" * 64)
    on_redis(redis_url, lambda r: add_dead(r, entry))
    dropped = runner.invoke(app, ["dlq", "drop", entry.id])
    assert dropped.exit_code == 0, dropped.output

    async def check(redis: aioredis.Redis) -> tuple[int, int]:
        return await DeadLetterQueue(redis).count(), await redis.ttl(f"calhooks:ledger:{'d' * 64}")

    count, ttl = on_redis(redis_url, check)
    assert count == 0
    assert ttl > 0
    assert runner.invoke(app, ["dlq", "drop", "--all"]).exit_code == 1
    assert runner.invoke(app, ["dlq", "drop", "--all", "--yes"]).exit_code == 0


def test_unknown_entries_and_empty_queues_say_so(redis_url: str) -> None:
    """A missing id fails with one line; an empty queue is reported as empty."""
    assert runner.invoke(app, ["dlq", "list"]).stdout.strip() == "The dead-letter queue is empty."
    missing = runner.invoke(app, ["dlq", "show", "ffffffff"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no dead-letter entry 'ffffffff'")


def test_events_show_tells_what_happened(redis_url: str) -> None:
    """`events show` prints the event log, rule states and dead letters of one event."""
    event_id = "e" * 64
    entry = dead_letter(event_id, rule="broken")

    async def record(redis: aioredis.Redis) -> None:
        log = EventLog(redis, ttl=600).recorder(event_id)
        log.add("attempt", attempt=1, worker="w-1", trigger="BOOKING_CREATED", received_at=1.0)
        log.add("matched", rules=["time-off", "broken"])
        log.add("call", tool="cal_x", status=201, ms=3.2, request_id="r1")
        log.add("step", rule="time-off", step="ooo", index=None, tool="cal_x", how="called", ms=4)
        log.add("rule", rule="time-off", outcome="done")
        log.add("dead_lettered", rule="broken", dead_letter=entry.id)
        log.add("done")
        await log.flush()
        await add_dead(redis, entry)
        ledger = Ledger(redis, ttl=600)
        state = await ledger.begin(event_id)
        ledger.record_matched(state, ["time-off", "broken"])
        ledger.set_rule(state, "time-off", "done")
        await ledger.write(state)

    on_redis(redis_url, record)
    shown = runner.invoke(app, ["events", "show", event_id[:10]])
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    assert text.splitlines()[0] == f"event {event_id}  BOOKING_CREATED"
    assert "matched time-off, broken" in text
    assert "call cal_x -> 201 (3.2 ms)" in text
    assert "step time-off/ooo called" in text
    assert f"dead letter {entry.id} (broken)" in text
    as_json = json.loads(runner.invoke(app, ["events", "show", event_id, "--json"]).stdout)
    assert as_json["rules"] == {"broken": "dead", "time-off": "done"}
    unknown = runner.invoke(app, ["events", "show", "0" * 64])
    assert unknown.exit_code == 1


def test_events_show_says_why_rules_did_not_match() -> None:
    """The `matched` record names each rule that did not match and why."""
    record = {
        "kind": "matched",
        "rules": [],
        "not_matched": {
            "time-off-cancel-deletes-ooo": "when is false: payload.type == 'time-off'",
            "team-form": "runs on FORM_SUBMITTED",
        },
    }
    assert describe(record).splitlines() == [
        "matched no rule",
        "    not time-off-cancel-deletes-ooo: when is false: payload.type == 'time-off'",
        "    not team-form: runs on FORM_SUBMITTED",
    ]


def test_events_show_folds_waiting_attempts_into_one_line() -> None:
    """Attempts that only deferred, for one reason, are one line: how often, how long, why."""
    reason = "waiting for the booking's creation, 30 s at most"
    log: list[dict[str, Any]] = []
    for attempt in range(1, 31):
        log.append({"kind": "attempt", "attempt": attempt, "at": 100.0 + attempt})
        log.append({"kind": "deferred", "delay": 1.0, "reason": reason, "at": 100.1 + attempt})
    log.append({"kind": "attempt", "attempt": 31, "at": 131.0})
    log.append({"kind": "skipped", "reason": "gave up", "at": 131.1})
    lines = [text for _, text in collapse(log)]
    assert lines == [
        f"deferred 30 times over 29.1 s (attempts 1-30): {reason}",
        "attempt 31 on None",
        "skipped: gave up",
    ]


def test_events_show_names_the_booking_and_its_chain(redis_url: str) -> None:
    """A reschedule's event shows its booking, the uid it replaced and its chain's first uid."""
    event_id = "c" * 64

    async def record(redis: aioredis.Redis) -> None:
        log = EventLog(redis, ttl=600).recorder(event_id)
        log.add("attempt", attempt=1, worker="w-1", trigger="BOOKING_RESCHEDULED", received_at=1.0)
        log.add("booking", uid="uid-C", chain="uid-A", replaces="uid-B")
        log.add("matched", rules=[])
        log.add("done")
        await log.flush()

    on_redis(redis_url, record)
    shown = runner.invoke(app, ["events", "show", event_id])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[1] == "booking uid-C (replaces uid-B, chain uid-A)"
    assert any(line.endswith("  booking uid-C (replaces uid-B, chain uid-A)") for line in lines)


def test_entries_and_events_show_their_connection(redis_url: str) -> None:
    """A connection's entry says which (its name, or its PCID when the worker did not know
    it); the environment organization's says so; `events show` names the connection too."""
    pcid = "0b5e6c1e-7a51-4c8e-9d56-3c4e0f6d1a2b"
    named = dead_letter("d" * 64, connection=pcid, connection_name="globex")
    unnamed = dead_letter("e" * 64, connection=pcid, dead_at=time.time() + 1)
    environment = dead_letter("f" * 64, dead_at=time.time() + 2)
    on_redis(redis_url, lambda r: add_dead(r, named, unnamed, environment))
    listed = runner.invoke(app, ["dlq", "list"]).stdout.splitlines()
    assert [line.split()[4] for line in listed] == ["env", pcid[:8], "globex"]
    shown = runner.invoke(app, ["dlq", "show", named.id]).stdout
    assert f"org      connection globex ({pcid})" in shown
    assert (
        "org      the environment's" in runner.invoke(app, ["dlq", "show", environment.id]).stdout
    )
    as_json = json.loads(runner.invoke(app, ["dlq", "show", named.id, "--json"]).stdout)
    assert (as_json["connection"], as_json["connection_name"]) == (pcid, "globex")

    async def log(redis: aioredis.Redis) -> None:
        recorder = EventLog(redis, ttl=600).recorder(named.event_id)
        recorder.add(
            "attempt",
            attempt=1,
            worker="w",
            trigger="BOOKING_CREATED",
            connection=pcid,
            connection_name="globex",
        )
        await recorder.flush()

    on_redis(redis_url, log)
    events = runner.invoke(app, ["events", "show", named.event_id])
    assert events.exit_code == 0, events.output
    assert events.stdout.splitlines()[1] == f"connection globex ({pcid})"
