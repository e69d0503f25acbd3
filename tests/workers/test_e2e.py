"""End to end over real processes: the sandbox Cal.com delivers, `calhooks serve` queues,
`calhooks worker` runs the rules - through crashes, faults, replays, several workers."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.sandbox import RateLimit
from calhooks.workers.deadletter import DeadLetterQueue
from calhooks.workers.eventlog import EventLog
from calhooks.workers.ledger import Ledger
from tests.sandbox.server import RunningSandbox
from tests.waiting import eventually
from tests.workers.processes import (
    Process,
    environment,
    queue_event,
    start_intake,
    start_worker,
)

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rules.yaml"
SECRET = "whsec_e2e_secret"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
LIST_USERS = "cal_organizations_users_controller_get_organizations_users"
ALICE, BOB, CAROL = 101, 102, 103


@pytest.fixture
async def redis(redis_server: EmbeddedRedis, redis_client: aioredis.Redis) -> aioredis.Redis:
    return redis_client


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


async def subscribe(sandbox: RunningSandbox, intake: Process, triggers: list[str]) -> None:
    async with sandbox.client() as cal:
        await cal.call(
            "cal_organizations_webhooks_controller_create_organization_webhook",
            active=True,
            subscriberUrl=f"{intake.url}/webhooks/cal",
            triggers=triggers,
            secret=SECRET,
        )


async def emit(sandbox: RunningSandbox, trigger: str, **fields: Any) -> dict[str, Any]:
    answer = await sandbox.admin(
        "POST", "/events", json={"trigger": trigger, "wait": True, **fields}
    )
    assert answer.status_code == 200, answer.text
    emitted: dict[str, Any] = answer.json()
    return emitted


def ooo_entries(sandbox: RunningSandbox, user_id: int, notes_part: str = "") -> list[Any]:
    return [
        entry
        for entry in sandbox.store.ooo.values()
        if entry.user_id == user_id and notes_part in (entry.notes or "")
    ]


def rule_done(redis: aioredis.Redis, event_id: str, rule: str) -> Callable[[], Any]:
    async def check() -> bool:
        state = await Ledger(redis, ttl=60).load(event_id)
        return state.rules.get(rule) in ("done", "dead", "skipped")

    return check


async def test_time_off_booking_creates_ooo_and_its_cancellation_removes_it(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """Sandbox → signed delivery → intake → worker → OOO entry; the cancellation deletes it."""
    env = environment(
        redis_server.url, sandbox.url, EXAMPLES, webhook_secrets=SECRET, worker_ordering_wait=5
    )
    worker = start_worker("w1", env, tmp_path)
    processes.append(worker)
    intake = start_intake(env, tmp_path)
    processes.append(intake)
    await subscribe(sandbox, intake, ["BOOKING_CREATED", "BOOKING_CANCELLED"])
    created = await emit(sandbox, "BOOKING_CREATED", user="alice", eventType="time-off")
    uid = created["body"]["payload"]["uid"]
    await eventually(lambda: ooo_entries(sandbox, ALICE, uid), what="the OOO entry")
    await emit(
        sandbox,
        "BOOKING_CANCELLED",
        user="alice",
        eventType="time-off",
        uid=uid,
        startTime=created["body"]["payload"]["startTime"],
        endTime=created["body"]["payload"]["endTime"],
    )
    await eventually(lambda: not ooo_entries(sandbox, ALICE, uid), what="the entry's deletion")
    assert len(sandbox.requests(CREATE_OOO)) == 1
    assert worker.get("/livez").status_code == 200
    metrics = worker.get("/metrics").text
    assert 'calhooks_worker_events_total{connection="env",outcome="processed"} 2.0' in metrics
    assert (
        f'calhooks_calcom_calls_total{{connection="env",status="201",tool="{CREATE_OOO}"}} 1.0'
        in metrics
    )
    assert await redis.exists("arq:queue:health-check:w1")


def ooo_rule(name: str, users: list[tuple[str, int]], *, extra: str = "") -> str:
    """A rule creating one OOO entry per (step id, user), in order, for a BOOKING_CREATED."""
    steps = "".join(
        f"""
      - id: {step}
        tool: {CREATE_OOO}
        with:
          userId: {user}
          start: ${{{{ payload.startTime }}}}
          end: ${{{{ payload.endTime }}}}
          reason: vacation
          notes: "{step} ${{{{ payload.uid }}}}"{extra}"""
        for step, user in users
    )
    return f"""
rules:
  - name: {name}
    on: BOOKING_CREATED
    steps:{steps}
"""


def booking_body(uid: str, trigger: str = "BOOKING_CREATED", **payload: Any) -> dict[str, Any]:
    return {
        "triggerEvent": trigger,
        "createdAt": "2031-05-01T08:00:00.000Z",
        "payload": {
            "type": "time-off",
            "uid": uid,
            "title": "Time off",
            "startTime": "2031-06-02T00:00:00Z",
            "endTime": "2031-06-04T00:00:00Z",
            "organizer": {"email": "alice@acme.example", "name": "Alice Anders"},
            "attendees": [],
            **payload,
        },
    }


async def test_a_worker_killed_mid_rule_leaves_every_effect_done_once(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """kill -9 while a create is in flight; the next worker finishes with one entry per step."""
    rules = write_rules(
        tmp_path, ooo_rule("three", [("one", ALICE), ("two", BOB), ("three", CAROL)])
    )
    env = environment(redis_server.url, sandbox.url, rules, worker_lease=2, api_timeout=2)
    first = start_worker("doomed", env, tmp_path)
    processes.append(first)
    sandbox.sandbox.faults.add(tool=CREATE_OOO, latency=0.8)
    event = await queue_event(redis, booking_body("crash-1"))

    def second_create_in_flight() -> bool:
        creates = sandbox.requests(CREATE_OOO)
        return len(creates) == 2 and creates[1].status is None

    await eventually(second_create_in_flight, what="the second create to be in flight")
    first.kill()
    # The dead worker's create still completes in Cal.com; the job runs again once the dead
    # worker's lease on it lapses (CALHOOKS_WORKER_LEASE, 2 s here).
    await eventually(lambda: sandbox.requests(CREATE_OOO)[1].status == 201, what="the create")
    processes.append(start_worker("survivor", env, tmp_path))
    await eventually(rule_done(redis, event, "three"), what="the rule to finish")
    for step, user in (("one", ALICE), ("two", BOB), ("three", CAROL)):
        assert len(ooo_entries(sandbox, user, f"{step} crash-1")) == 1, step
    assert [r.body["notes"] for r in sandbox.requests(CREATE_OOO)] == [
        "one crash-1",
        "two crash-1",
        "three crash-1",
    ]
    log = await EventLog(redis, ttl=60).read(event)
    hows = [(r["step"], r["how"]) for r in log if r["kind"] == "step" and "how" in r]
    assert ("two", "found") in hows
    assert ("one", "recorded") in hows


async def test_throttling_then_server_errors_then_success_completes_with_waits_honoured(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """429 with Retry-After: 1, then two 500s, then 201: one entry, each wait respected."""
    rules = write_rules(tmp_path, ooo_rule("flaky", [("block", ALICE)]))
    env = environment(redis_server.url, sandbox.url, rules)
    processes.append(start_worker("w1", env, tmp_path))
    sandbox.sandbox.faults.add(tool=CREATE_OOO, status=429, retry_after=1, times=1)
    sandbox.sandbox.faults.add(tool=CREATE_OOO, status=500, times=2)
    event = await queue_event(redis, booking_body("flaky-1"))
    await eventually(rule_done(redis, event, "flaky"), what="the rule to finish")
    creates = sandbox.requests(CREATE_OOO)
    assert [r.status for r in creates] == [429, 500, 500, 201]
    sent = [datetime.fromisoformat(r.at.replace("Z", "+00:00")).timestamp() for r in creates]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert gaps[0] >= 1.0  # Retry-After: 1
    assert min(gaps[1:]) >= 0.1  # at least half of CALHOOKS_WORKER_RETRY_BASE_DELAY (0.2 s)
    assert len(ooo_entries(sandbox, ALICE, "flaky-1")) == 1
    assert (await Ledger(redis, ttl=60).load(event)).rules == {"flaky": "done"}


async def test_a_rejected_call_is_dead_lettered_and_replays_after_the_fix(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """A 400 dead-letters at once; fix the rule, `calhooks dlq replay`, and it completes."""
    broken = """
rules:
  - name: cover
    on: BOOKING_CREATED
    steps:
      - id: organizer
        tool: cal_organizations_users_controller_get_organizations_users
        with:
          emails: ["${{ payload.organizer.email }}"]
      - id: ooo
        tool: cal_organizations_users_ooocontroller_create_organization_user_ooo
        with:
          userId: ${{ steps.organizer[0].id }}
          start: ${{ payload.startTime }}
          end: ${{ payload.endTime }}
          toUserId: ${{ steps.organizer[0].id }}
          notes: "cover ${{ payload.uid }}"
"""
    rules = write_rules(tmp_path, broken)
    env = environment(redis_server.url, sandbox.url, rules)
    processes.append(start_worker("w1", env, tmp_path))
    event = await queue_event(redis, booking_body("dead-1"))
    await eventually(rule_done(redis, event, "cover"), what="the rule to be dead-lettered")
    entries = await DeadLetterQueue(redis).page()
    assert [(e.rule, e.step, e.attempts, e.error["status"]) for e in entries] == [
        ("cover", "ooo", 1, 400)
    ]
    assert len(sandbox.requests(CREATE_OOO)) == 1  # not retried
    rules.write_text(broken.replace("          toUserId: ${{ steps.organizer[0].id }}\n", ""))
    replay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "dlq",
        "replay",
        entries[0].id[:8],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(replay.communicate(), 30)
    assert replay.returncode == 0, err.decode()
    assert b"Queued 1 event(s) again" in out

    async def replayed_done() -> bool:
        return (await Ledger(redis, ttl=60).load(event)).rules.get("cover") == "done"

    await eventually(replayed_done, what="the replayed rule to finish")
    assert len(ooo_entries(sandbox, ALICE, "cover dead-1")) == 1
    assert len(sandbox.requests(LIST_USERS)) == 1  # the step that had succeeded was reused
    assert await DeadLetterQueue(redis).count() == 0


async def test_cancellations_overtaking_creations_end_right_with_several_workers(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """Each booking's cancel is queued before its create; every OOO entry still ends deleted."""
    env = environment(redis_server.url, sandbox.url, EXAMPLES, worker_ordering_wait=10)
    for name in ("w1", "w2", "w3"):
        processes.append(start_worker(name, env, tmp_path))
    uids = [f"order-{n}" for n in range(6)]
    now = time.time()
    events = []
    for n, uid in enumerate(uids):
        dates = {
            "startTime": f"2031-07-{n + 1:02d}T00:00:00Z",
            "endTime": f"2031-07-{n + 1:02d}T12:00:00Z",
        }
        cancel = booking_body(uid, "BOOKING_CANCELLED", **dates)
        events.append(await queue_event(redis, cancel, received_at=now + n * 0.01))
        create = booking_body(uid, **dates)
        events.append(await queue_event(redis, create, received_at=now + n * 0.01 + 0.005))

    async def all_done() -> bool:
        states = [await Ledger(redis, ttl=60).load(e) for e in events]
        return all(s.matched is not None and len(s.rules) == len(s.matched) for s in states)

    await eventually(all_done, within=40, what="every event to be processed")
    for uid in uids:
        assert ooo_entries(sandbox, ALICE, uid) == [], uid
    assert len(sandbox.requests(CREATE_OOO)) == len(uids)
    deletes = "cal_organizations_users_ooocontroller_delete_organization_user_ooo"
    assert len(sandbox.requests(deletes)) == len(uids)


async def test_several_workers_share_the_rate_limit_without_a_429(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """Three workers against Cal.com's limit (scaled to 30 per 3-s window): no 429, none over."""
    sandbox.sandbox.limiter.configure(RateLimit(limit=30, window=3))
    lookup = """
rules:
  - name: lookup
    on: BOOKING_CREATED
    steps:
      - tool: cal_organizations_users_controller_get_organizations_users
        with:
          emails: ["${{ payload.organizer.email }}"]
"""
    env = environment(
        redis_server.url,
        sandbox.url,
        write_rules(tmp_path, lookup),
        worker_rate_limit_per_minute=600,
        worker_rate_limit_window=3,
    )
    for name in ("w1", "w2", "w3"):
        processes.append(start_worker(name, env, tmp_path))
    events = [await queue_event(redis, booking_body(f"rl-{n}")) for n in range(45)]

    async def all_done() -> bool:
        states = [await Ledger(redis, ttl=60).load(e) for e in events]
        return all(state.rules.get("lookup") == "done" for state in states)

    await eventually(all_done, within=40, what="every event to be processed")
    calls = sandbox.requests(LIST_USERS)
    assert [r.status for r in calls] == [200] * 45
    sent = sorted(datetime.fromisoformat(r.at.replace("Z", "+00:00")).timestamp() for r in calls)
    busiest = max(sum(1 for t in sent if start <= t < start + 3) for start in sent)
    assert busiest <= 30


async def test_arq_own_cli_runs_the_same_jobs(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """`arq calhooks.workers.WorkerSettings --burst` runs a queued event as `calhooks worker`."""
    rules = write_rules(tmp_path, ooo_rule("via-arq", [("block", ALICE)]))
    env = environment(redis_server.url, sandbox.url, rules, worker_http_port=0)
    event = await queue_event(redis, booking_body("arq-cli-1"))
    arq = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "arq"),
        "calhooks.workers.WorkerSettings",
        "--burst",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(arq.communicate(), 60)
    assert arq.returncode == 0, output.decode()
    assert (await Ledger(redis, ttl=60).load(event)).rules == {"via-arq": "done"}
    assert len(ooo_entries(sandbox, ALICE, "arq-cli-1")) == 1


async def test_sigterm_lets_the_running_event_finish(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """On SIGTERM a worker takes no new job, finishes the one in flight, and exits 0."""
    rules = write_rules(tmp_path, ooo_rule("drain", [("block", ALICE)]))
    env = environment(redis_server.url, sandbox.url, rules, worker_job_completion_wait=15)
    worker = start_worker("draining", env, tmp_path)
    processes.append(worker)
    sandbox.sandbox.faults.add(tool=CREATE_OOO, latency=1.0)
    event = await queue_event(redis, booking_body("drain-1"))
    await eventually(lambda: sandbox.requests(CREATE_OOO), what="the create to be in flight")
    worker.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.process.wait, 30) == 0
    assert (await Ledger(redis, ttl=60).load(event)).rules == {"drain": "done"}
    assert len(ooo_entries(sandbox, ALICE, "drain-1")) == 1
