"""The console's pages in-process, over records written as the workers and intake write them."""

from __future__ import annotations

import json
import time

import pytest
import redis
from starlette.testclient import TestClient

from calhooks.service.core import eventindex, timeseries
from tests.console.conftest import OPERATOR, READER, sign_in


def record(
    client: redis.Redis, event_id: str, *, trigger: str = "BOOKING_CREATED", outcome: str = "done",
    uid: str = "uid-1", received_at: float | None = None, rules: dict[str, str] | None = None,
) -> None:  # fmt: skip
    with client.pipeline(transaction=False) as pipe:
        eventindex.write_into(
            pipe,
            {
                "id": event_id,
                "trigger": trigger,
                "uid": uid,
                "outcome": outcome,
                "received_at": received_at or time.time(),
                "rules": rules or {},
                "attempts": 1,
            },
            ttl=3600,
        )
        pipe.execute()


@pytest.mark.parametrize(
    "page",
    ["/console/", "/console/events", "/console/rules", "/console/dead-letters",
     "/console/webhooks", "/console/connections", "/console/reconciliation"],
)  # fmt: skip
def test_every_page_renders_for_both_roles(client: TestClient, page: str) -> None:
    for user in (OPERATOR, READER):
        client.cookies.clear()
        sign_in(client, user)
        answer = client.get(page)
        assert answer.status_code == 200, answer.text
        assert f"{user[0]} <small>" in answer.text
        assert "text/html" in answer.headers["content-type"]
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_overview_charts_come_from_the_per_minute_series(
    client: TestClient, sync_redis: redis.Redis
) -> None:
    recorder = timeseries.Recorder()
    for _ in range(7):
        recorder.count("intake.accepted")
        recorder.observe_ms("intake.ms", 3.2)
    recorder.count("intake.bad_signature", 2)
    recorder.count("calcom.calls", 5)
    recorder.count("calcom.429")
    with sync_redis.pipeline(transaction=False) as pipe:
        recorder.write_into(pipe)
        pipe.execute()
    sign_in(client, OPERATOR)
    page = client.get("/console/").text
    assert 'aria-label="Deliveries per minute by outcome: accepted 7, bad_signature 2"' in page
    assert "Cal.com answered 429 1 times in the last hour" in page
    assert "2 deliveries with a bad signature" in page
    assert "&lt;= 5 ms / &lt;= 5 ms" in page  # intake p50 / p99


def test_events_list_filters_and_prefix(client: TestClient, sync_redis: redis.Redis) -> None:
    now = time.time()
    record(sync_redis, "aaaa1111", trigger="BOOKING_CREATED", uid="u-1", received_at=now - 30)
    record(sync_redis, "bbbb2222", trigger="BOOKING_CANCELLED", outcome="dead_lettered",
           uid="u-1", received_at=now - 20, rules={"time-off": "dead"})  # fmt: skip
    record(sync_redis, "aaaa3333", trigger="BOOKING_CREATED", uid="u-2", received_at=now - 10)
    sign_in(client, READER)
    every = client.get("/console/events").text
    assert every.index("aaaa3333") < every.index("bbbb2222") < every.index("aaaa1111")
    cancelled = client.get("/console/events/rows?trigger=BOOKING_CANCELLED").text
    assert "bbbb2222" in cancelled
    assert "aaaa" not in cancelled
    dead = client.get("/console/events/rows?outcome=dead_lettered").text
    assert "bbbb2222" in dead
    assert "aaaa" not in dead
    by_rule = client.get("/console/events/rows?rule=time-off").text
    assert "bbbb2222" in by_rule
    assert "aaaa" not in by_rule
    by_uid = client.get("/console/events/rows?uid=u-2").text
    assert "aaaa3333" in by_uid
    assert "aaaa1111" not in by_uid
    assert "bbbb" not in by_uid
    by_prefix = client.get("/console/events/rows?id=aaaa").text
    assert "aaaa1111" in by_prefix
    assert "aaaa3333" in by_prefix
    assert "bbbb" not in by_prefix
    short = client.get("/console/events/rows?id=aa").text
    assert "an id prefix needs 4+" in short


def test_events_pages_go_back_in_time(client: TestClient, sync_redis: redis.Redis) -> None:
    now = time.time()
    for i in range(120):
        record(sync_redis, f"ev{i:04d}", received_at=now - 1000 + i)
    sign_in(client, READER)
    first = client.get("/console/events/rows").text
    assert "ev0119" in first
    assert "ev0070" in first
    assert "ev0069" not in first
    link = first.split('href="/console/events?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    second = client.get("/console/events/rows?" + link).text
    assert "ev0069" in second
    assert "ev0020" in second
    assert "ev0070" not in second


def test_event_page_shows_the_delivery_log(client: TestClient, sync_redis: redis.Redis) -> None:
    event_id = "cafe0123456789ab"
    record(sync_redis, event_id, rules={"time-off": "done"})
    logs = [
        {"at": time.time(), "kind": "attempt", "attempt": 1, "worker": "w-1",
         "trigger": "BOOKING_CREATED", "received_at": time.time()},
        {"at": time.time(), "kind": "matched", "rules": ["time-off"]},
        {"at": time.time(), "kind": "call", "tool": "cal_x", "status": 201, "ms": 12.5,
         "request_id": "r-1"},
        {"at": time.time(), "kind": "rule", "rule": "time-off", "outcome": "done"},
        {"at": time.time(), "kind": "done"},
    ]  # fmt: skip
    sync_redis.rpush(f"calhooks:eventlog:{event_id}", *[json.dumps(r) for r in logs])
    sign_in(client, READER)
    page = client.get(f"/console/events/{event_id[:8]}")
    assert page.status_code == 200
    assert "attempt 1 on w-1" in page.text
    assert "Cal.com cal_x" in page.text
    assert "12.5 ms" in page.text
    assert client.get("/console/events/ffff0000").status_code == 404


def test_drop_asks_for_confirmation_first(client: TestClient) -> None:
    sign_in(client, OPERATOR)
    page = client.get("/console/dead-letters/drop?all=1")
    assert page.status_code == 200
    assert 'name="confirm" value="yes"' in page.text


def dead_letter(client: redis.Redis, event_id: str, rule: str = "time-off-creates-ooo") -> str:
    from calhooks.workers.deadletter import DeadLetter

    entry = DeadLetter(
        event_id=event_id, trigger="BOOKING_CREATED", rule=rule,
        error={"status": 400, "code": "BadRequestException", "message": "nope"}, attempts=1,
        event={"id": event_id}, params={"apiKey": "cal_live_0123456789abcdef"},
    )  # fmt: skip
    client.hset("calhooks:dlq", entry.id, json.dumps(entry.to_dict()))
    client.zadd("calhooks:dlq:index", {entry.id: entry.dead_at})
    return entry.id


def test_drop_needs_the_confirmation(client: TestClient, sync_redis: redis.Redis) -> None:
    first = dead_letter(sync_redis, "e1e1e1e1")
    second = dead_letter(sync_redis, "e2e2e2e2")
    sign_in(client, OPERATOR)
    page = client.get(f"/console/dead-letters/{first}")
    assert "BadRequestException" in page.text
    assert "cal_live_0123456789abcdef" not in page.text  # parameters are masked
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    unconfirmed = client.post("/console/dead-letters/drop", data={"id": first, "csrf": csrf})
    assert "Drop dead letters?" in unconfirmed.text  # the confirmation page, nothing dropped
    assert 'name="confirm" value="yes"' in unconfirmed.text
    assert sync_redis.zcard("calhooks:dlq:index") == 2
    confirm = client.get(f"/console/dead-letters/drop?id={first}")
    assert first in confirm.text
    assert second not in confirm.text
    dropped = client.post(
        "/console/dead-letters/drop", data={"id": first, "confirm": "yes", "csrf": csrf}
    )
    assert "Dropped 1 dead letter(s)." in dropped.text
    assert sync_redis.zrange("calhooks:dlq:index", 0, -1) == [second.encode()]


def test_replay_all_queues_every_entry(client: TestClient, sync_redis: redis.Redis) -> None:
    ids = [dead_letter(sync_redis, f"e{i}e{i}e{i}e{i}") for i in range(3)]
    sign_in(client, OPERATOR)
    page = client.get("/console/dead-letters")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = client.post("/console/dead-letters/replay", data={"all": "1", "csrf": csrf})
    assert "Replaying 3: 3 queued again" in answer.text
    assert answer.text.count(">replaying<") == 3
    assert 'hx-trigger="every 3s"' in answer.text  # the page follows the replay's progress
    assert sync_redis.zcard("arq:queue") == 3
    assert all(sync_redis.exists(f"arq:job:e{i}e{i}e{i}e{i}") for i in range(3))
    assert len(ids) == 3


def test_events_and_dead_letters_show_their_organization(
    client: TestClient, sync_redis: redis.Redis
) -> None:
    """A connection's event and dead letter name it (its PCID on hover and on the pages); the
    environment organization's say ``env``."""
    from calhooks.workers.deadletter import DeadLetter

    pcid = "0b5e6c1e-7a51-4c8e-9d56-3c4e0f6d1a2b"
    with sync_redis.pipeline(transaction=False) as pipe:
        eventindex.write_into(
            pipe,
            {"id": "c0ffee00aa", "trigger": "BOOKING_CREATED", "outcome": "dead_lettered",
             "received_at": time.time(), "rules": {"r": "dead"}, "attempts": 1,
             "connection": pcid, "connection_name": "globex"},
            ttl=3600,
        )  # fmt: skip
        pipe.execute()
    record(sync_redis, "e0e0e0e0ee")
    entry = DeadLetter(
        event_id="c0ffee00aa", trigger="BOOKING_CREATED", rule="r", error={"message": "gone"},
        attempts=1, event={"id": "c0ffee00aa", "connection": pcid}, connection=pcid,
        connection_name="globex",
    )  # fmt: skip
    sync_redis.hset("calhooks:dlq", entry.id, json.dumps(entry.to_dict()))
    sync_redis.zadd("calhooks:dlq:index", {entry.id: entry.dead_at})
    sign_in(client, READER)
    rows = client.get("/console/events/rows").text
    assert f'<span title="{pcid}">globex</span>' in rows
    assert "<td>env</td>" in rows
    event = client.get("/console/events/c0ffee00aa").text
    assert f"globex <code>{pcid}</code>" in event
    assert "the environment's" in client.get("/console/events/e0e0e0e0ee").text
    assert f'<span title="{pcid}">globex</span>' in client.get("/console/dead-letters").text
    assert f"globex <code>{pcid}</code>" in client.get(f"/console/dead-letters/{entry.id}").text
