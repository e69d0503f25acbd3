"""The job's attempt logic against the sandbox: reuse of recorded steps, retries, dead letters,
replays, crash loops, deferrals and stale booking events (rules here are plain Python)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq import Retry

from calhooks.service.calcom import CalcomClient
from calhooks.workers.deadletter import DeadLetterQueue, entry_id
from calhooks.workers.eventlog import CallLog, EventLog
from calhooks.workers.gates import GateChain
from calhooks.workers.jobs import EventLike, Invoke, Processor
from calhooks.workers.ledger import Ledger
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.retries import Defer, RetryPolicy
from calhooks.workers.rules import StepCall
from calhooks.workers.rules.scope import Origin
from tests.sandbox.server import RunningSandbox

LIST_USERS = "cal_organizations_users_controller_get_organizations_users"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
LIST_OOO = "cal_organizations_users_ooocontroller_get_organization_user_ooo"
BOB_EMAIL = "bob@acme.example"


@dataclass(frozen=True)
class FakeEvent:
    id: str
    trigger: str
    payload: dict[str, Any]
    received_at: float = field(default_factory=time.time)
    created_at: str | None = None
    source: str = "webhook"
    connection: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "trigger": self.trigger,
            "created_at": self.created_at,
            "payload": self.payload,
            "raw": {},
            "received_at": self.received_at,
        }


Step = Callable[[EventLike, dict[str, Any]], StepCall]


@dataclass
class PyRule:
    name: str
    trigger: str
    steps: list[tuple[str, Step]]


class PyRules:
    """Rules written as Python functions producing tool calls, run in order."""

    def __init__(self, *rules: PyRule) -> None:
        self.rules = {rule.name: rule for rule in rules}

    def matching(
        self,
        event: EventLike,
        *,
        why_not: dict[str, str] | None = None,
        origin: Origin | None = None,
    ) -> Sequence[PyRule]:
        if why_not is not None:
            why_not.update(
                {
                    r.name: f"runs on {r.trigger}"
                    for r in self.rules.values()
                    if r.trigger != event.trigger
                }
            )
        return [rule for rule in self.rules.values() if rule.trigger == event.trigger]

    def named(self, name: str) -> PyRule | None:
        return self.rules.get(name)

    async def run(
        self, rule: PyRule, event: EventLike, invoke: Invoke, *, origin: Origin | None = None
    ) -> None:
        outputs: dict[str, Any] = {}
        for step_id, build in rule.steps:
            outputs[step_id] = await invoke(build(event, outputs))


def find_user(rule: str) -> tuple[str, Step]:
    return (
        "user",
        lambda event, _: StepCall(rule, "user", None, LIST_USERS, {"emails": [BOB_EMAIL]}),
    )


def create_ooo(rule: str, **extra: Any) -> tuple[str, Step]:
    def build(event: EventLike, outputs: dict[str, Any]) -> StepCall:
        params = {
            "userId": outputs["user"][0]["id"],
            "start": event.payload["startTime"],
            "end": event.payload["endTime"],
            "notes": f"booking {event.payload['uid']}",
            "reason": "vacation",
            **extra,
        }
        return StepCall(rule, "ooo", None, CREATE_OOO, params)

    return ("ooo", build)


TIME_OFF = PyRule("time-off", "BOOKING_CREATED", [find_user("time-off"), create_ooo("time-off")])


def booking(uid: str = "bk-1", trigger: str = "BOOKING_CREATED") -> FakeEvent:
    return FakeEvent(
        f"ev-{uid}-{trigger}",
        trigger,
        {"uid": uid, "startTime": "2031-05-01T09:00:00Z", "endTime": "2031-05-02T17:00:00Z"},
    )


@dataclass
class Harness:
    sandbox: RunningSandbox
    redis: aioredis.Redis
    client: CalcomClient
    rules: PyRules
    policy: RetryPolicy

    def processor(self) -> Processor:
        return Processor(
            rules=lambda: self.rules,
            client=self.client,
            ledger=Ledger(self.redis, ttl=600),
            dead_letters=DeadLetterQueue(self.redis),
            eventlog=EventLog(self.redis, ttl=600),
            order=BookingOrder(self.redis, wait=0.0, lock_wait=0.05),
            policy=self.policy,
            job_timeout=30,
            worker_name="test-worker",
        )

    def calls(self, tool: str) -> int:
        return len(self.sandbox.requests(tool))

    def ooo_entries(self, notes: str) -> int:
        return sum(1 for entry in self.sandbox.store.ooo.values() if entry.notes == notes)

    async def log_kinds(self, event_id: str) -> list[str]:
        return [r["kind"] for r in await EventLog(self.redis, ttl=600).read(event_id)]


@pytest.fixture
async def harness(sandbox: RunningSandbox, redis_client: aioredis.Redis) -> AsyncIterator[Harness]:
    async with sandbox.client(gate=GateChain(CallLog())) as client:
        yield Harness(sandbox, redis_client, client, PyRules(TIME_OFF), RetryPolicy(3, 10.0, 100.0))


async def test_an_event_runs_its_rule_once_even_when_run_twice(harness: Harness) -> None:
    """A second run of a completed event (arq's at-least-once) makes no call at all."""
    event = booking()
    assert await harness.processor().process(event) == {"rules": {"time-off": "done"}}
    assert await harness.processor().process(event) == {"rules": {"time-off": "done"}}
    assert harness.ooo_entries("booking bk-1") == 1
    assert (harness.calls(LIST_USERS), harness.calls(CREATE_OOO)) == (1, 1)
    kinds = await harness.log_kinds(event.id)
    assert kinds[:7] == ["attempt", "booking", "matched", "call", "step", "call", "step"]
    assert kinds.count("done") == 2


async def test_a_transient_failure_retries_without_repeating_done_steps(
    harness: Harness,
) -> None:
    """A 503 on the create retries the event later; the user lookup is not made again."""
    harness.sandbox.sandbox.faults.add(tool=CREATE_OOO, status=503, times=1)
    event = booking()
    with pytest.raises(Retry) as retry:
        await harness.processor().process(event)
    assert 5_000 <= (retry.value.defer_score or 0) <= 10_000  # half to all of the 10 s base
    assert await harness.processor().process(event) == {"rules": {"time-off": "done"}}
    assert harness.calls(LIST_USERS) == 1
    assert harness.ooo_entries("booking bk-1") == 1
    assert "retry" in await harness.log_kinds(event.id)


async def test_cal_com_retry_after_sets_the_retry_delay(harness: Harness) -> None:
    """A 429 asking for 40 s (past the client's own short retries) defers the event 40-41 s."""
    harness.client.retries = 0
    harness.sandbox.sandbox.faults.add(tool=CREATE_OOO, status=429, retry_after=40, times=1)
    with pytest.raises(Retry) as retry:
        await harness.processor().process(booking())
    assert 40_000 <= (retry.value.defer_score or 0) <= 41_000


async def test_a_permanent_failure_is_dead_lettered_at_once(harness: Harness) -> None:
    """A 400 goes straight to the dead-letter queue with step, params and error; no retry."""
    harness.sandbox.sandbox.faults.add(tool=CREATE_OOO, status=400)
    event = booking()
    assert await harness.processor().process(event) == {"rules": {"time-off": "dead"}}
    dead = await DeadLetterQueue(harness.redis).get(entry_id(event.id, "time-off"))
    assert dead is not None
    assert (dead.rule, dead.step, dead.tool, dead.attempts) == ("time-off", "ooo", CREATE_OOO, 1)
    assert dead.error["status"] == 400
    assert dead.params is not None
    assert dead.params["notes"] == "booking bk-1"
    assert dead.event == event.to_dict()
    assert await harness.redis.ttl(f"calhooks:ledger:{event.id}") == -1
    assert await harness.redis.ttl(f"calhooks:eventlog:{event.id}") == -1


async def test_the_last_transient_failure_is_dead_lettered(harness: Harness) -> None:
    """After max_tries failed attempts the rule is dead-lettered with its attempt count."""
    harness.sandbox.sandbox.faults.add(tool=CREATE_OOO, status=503)
    event = booking()
    for _ in range(2):
        with pytest.raises(Retry):
            await harness.processor().process(event)
    assert await harness.processor().process(event) == {"rules": {"time-off": "dead"}}
    dead = await DeadLetterQueue(harness.redis).get(entry_id(event.id, "time-off"))
    assert dead is not None
    assert (dead.attempts, dead.error["status"]) == (3, 503)


async def test_a_replayed_rule_resumes_after_its_last_good_step(harness: Harness) -> None:
    """Reopening a dead rule runs it again without repeating its successful steps."""
    fault = harness.sandbox.sandbox.faults.add(tool=CREATE_OOO, status=400)
    event = booking()
    await harness.processor().process(event)
    harness.sandbox.sandbox.faults.remove(fault.id)
    ledger = Ledger(harness.redis, ttl=600)
    await ledger.reopen_rule(event.id, "time-off")
    assert await harness.processor().process(event) == {"rules": {"time-off": "done"}}
    assert harness.calls(LIST_USERS) == 1
    assert harness.ooo_entries("booking bk-1") == 1
    assert await DeadLetterQueue(harness.redis).count() == 0
    assert 0 < await harness.redis.ttl(f"calhooks:ledger:{event.id}") <= 600


async def test_one_failing_rule_does_not_stop_the_others(harness: Harness) -> None:
    """Rules of one event fail and succeed independently."""
    broken = PyRule(
        "broken",
        "BOOKING_CREATED",
        [find_user("broken"), create_ooo("broken", reason="not-a-reason")],
    )
    harness.rules = PyRules(TIME_OFF, broken)
    result = await harness.processor().process(booking())
    assert result == {"rules": {"time-off": "done", "broken": "dead"}}
    assert harness.ooo_entries("booking bk-1") == 1


async def test_a_worker_crash_loop_ends_in_the_dead_letter_queue(harness: Harness) -> None:
    """An event whose runs never end (worker killed each time) is dead-lettered, not rerun."""
    event = booking()
    ledger = Ledger(harness.redis, ttl=600)
    for _ in range(3):
        await ledger.begin(event.id)  # three runs that died without ending
    assert await harness.processor().process(event) == {"rules": {"time-off": "dead"}}
    dead = await DeadLetterQueue(harness.redis).get(entry_id(event.id, "time-off"))
    assert dead is not None
    assert "died 3 times" in dead.error["message"]
    assert harness.calls(CREATE_OOO) == 0


async def test_waiting_for_the_rate_limit_defers_without_counting_an_attempt(
    harness: Harness,
) -> None:
    """A Defer from a step re-queues the event (arq Retry) and records no failure."""

    class DeferringRules(PyRules):
        async def run(
            self, rule: PyRule, event: EventLike, invoke: Invoke, *, origin: Origin | None = None
        ) -> None:
            raise Defer(2.5, "shared Cal.com rate limit")

    harness.rules = DeferringRules(TIME_OFF)
    event = booking()
    with pytest.raises(Retry) as retry:
        await harness.processor().process(event)
    assert retry.value.defer_score == 2500
    state = await Ledger(harness.redis, ttl=600).load(event.id)
    assert state.failures == {}
    assert (state.runs, state.ends) == (1, 1)
    assert "deferred" in await harness.log_kinds(event.id)


async def test_a_creation_after_its_cancellation_is_skipped(harness: Harness) -> None:
    """Once a booking's cancellation was processed, its late BOOKING_CREATED does nothing."""
    await harness.processor().process(booking(trigger="BOOKING_CANCELLED"))
    result = await harness.processor().process(booking())
    assert result == {"skipped": "booking bk-1 was already cancelled"}
    assert harness.calls(CREATE_OOO) == 0


async def test_a_rule_no_longer_matching_is_skipped_on_retry(harness: Harness) -> None:
    """A retried event does not run a rule that was removed from the rules meanwhile."""
    harness.sandbox.sandbox.faults.add(tool=CREATE_OOO, status=503, times=1)
    event = booking()
    with pytest.raises(Retry):
        await harness.processor().process(event)
    harness.rules = PyRules()
    assert await harness.processor().process(event) == {"rules": {"time-off": "skipped"}}
    assert harness.calls(CREATE_OOO) == 1


class WrappingRules(PyRules):
    """A rules engine that wraps whatever a step raises in its own error."""

    async def run(
        self, rule: PyRule, event: EventLike, invoke: Invoke, *, origin: Origin | None = None
    ) -> None:
        try:
            await super().run(rule, event, invoke)
        except Exception as exc:
            raise RuntimeError(f"rule {rule.name} failed") from exc


async def test_errors_wrapped_by_the_rules_engine_are_still_classified(
    harness: Harness,
) -> None:
    """A 503 wrapped in the engine's own error still retries, and names its step if dead."""
    harness.rules = WrappingRules(TIME_OFF)
    harness.sandbox.sandbox.faults.add(tool=CREATE_OOO, status=503, times=1)
    event = booking()
    with pytest.raises(Retry):
        await harness.processor().process(event)
    harness.sandbox.sandbox.faults.add(tool=CREATE_OOO, status=422, times=1)
    assert await harness.processor().process(event) == {"rules": {"time-off": "dead"}}
    dead = await DeadLetterQueue(harness.redis).get(entry_id(event.id, "time-off"))
    assert dead is not None
    assert (dead.step, dead.error["status"], dead.attempts) == ("ooo", 422, 2)
