"""The step ledger: each rule step's effect on Cal.com happens once per event, across crashes.

arq delivers a job at least once: a worker killed mid-job (or cancelled at shutdown) leaves
the job to run again from the start. So every step that calls a tool is recorded in Redis -
one hash per event, ``calhooks:ledger:<event id>``, field ``step:[rule, step, index]`` - and a
re-run reuses what is recorded instead of calling Cal.com again.

How one step runs (``ExactlyOnce.run``):

1. **Recorded as done** - its output is returned; nothing is sent.
2. **Not recorded** - for a create (POST) or a delete, a ``started`` marker is written first;
   then the tool is called and its output recorded as ``done`` before the rule moves on.
   A GET or PATCH writes no marker: calling it again leaves Cal.com in the same state.
3. **Marked started but not done** - an earlier attempt died (or lost its answer) between
   sending and recording, so the effect may or may not exist:

   * a create with a finder (``workers.finders``: OOO entries, webhooks, attributes and their
     options, memberships, users, managed organizations) first looks the entity up; if
     found, it is recorded as the step's output and not created again;
   * otherwise the call is repeated, and the answers that prove the earlier attempt took
     effect count as done: 409 Conflict for a create, 404 Not Found for a delete.

A Cal.com answer that proves nothing happened (a 4xx, or a parameter rejected before
sending) removes the ``started`` marker, so a later attempt does not go looking.

**Guarantee.** While an event's ledger exists, each of its steps takes effect in Cal.com at
most once and - if the event completes - exactly once, for every tool that is idempotent
(GET, PATCH, DELETE) or has a finder or a unique constraint Cal.com enforces with a 409.

**Limits.**

* Records live ``CALHOOKS_WORKER_RECORD_TTL`` seconds (7 days by default; kept indefinitely
  while one of the event's rules sits in the dead-letter queue). A replay after they expired
  runs the steps again.
* A finder adopts an identical entity that already existed (say, the same OOO days with the
  same notes entered by hand) instead of creating a second one.
* Creates with neither a finder nor a uniqueness check in Cal.com are at-least-once in the
  crash window: assigning an attribute option to a user when Cal.com accepts duplicates.
* The window is the time between the request reaching Cal.com and the ``done`` record
  (one Redis write); an attempt is only re-run after arq's in-progress key lapses
  (``job_timeout`` + 10 s), so the first request has finished by the time a finder looks.
* Step outputs are stored as given; a rule whose later steps depend on a list that
  changed between attempts (say a for_each over a live GET) reuses the recorded list.

The hash also holds, per event: the rules matched on the first attempt (``matched``), each
rule's final state (``rule:<name>``: done, dead, skipped), its transient failures
(``fail:<name>``), and run counters (``runs`` and ``ends``: a run that never ended was a
crash, and a crash loop is dead-lettered instead of retried forever).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis

from service.calcom.client import CalcomClient
from service.calcom.errors import CalcomError, ToolValidationError
from service.calcom.tools import Tool
from workers import keys
from workers.finders import FINDERS, Finder
from workers.redistyped import hdel, hget, hgetall, hincrby, hset

STARTED = "started"
DONE = "done"

RuleOutcome = Literal["done", "dead", "skipped"]
How = Literal["called", "recorded", "found", "already"]

# Count a run, refresh the TTL unless the event is kept (dead-lettered), return the hash.
_BEGIN = """
redis.call('HINCRBY', KEYS[1], 'runs', 1)
if redis.call('HGET', KEYS[1], 'kept') ~= '1' then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return redis.call('HGETALL', KEYS[1])
"""


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class StepKey:
    """Identifies one call of one step: rule name, step id, and the for_each index if any."""

    rule: str
    step: str
    index: int | None = None

    @property
    def field(self) -> str:
        return "step:" + _dump([self.rule, self.step, self.index])


@dataclass(frozen=True, slots=True)
class StepRecord:
    state: str
    output: Any = None
    how: str | None = None
    at: float = 0.0


@dataclass
class EventState:
    """One event's ledger, loaded at the start of an attempt and kept current by its writes."""

    event_id: str
    steps: dict[str, StepRecord] = field(default_factory=dict)
    matched: list[str] | None = None
    rules: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    ends: int = 0
    kept: bool = False

    @property
    def crashes(self) -> int:
        """Earlier runs that never ended (the current run is not counted)."""
        return max(0, self.runs - 1 - self.ends)

    @classmethod
    def parse(cls, event_id: str, raw: Mapping[bytes, bytes]) -> EventState:
        state = cls(event_id)
        for raw_key, raw_value in raw.items():
            key, value = raw_key.decode(), raw_value.decode()
            if key.startswith("step:"):
                data = json.loads(value)
                state.steps[key] = StepRecord(
                    data["state"], data.get("output"), data.get("how"), data.get("at", 0.0)
                )
            elif key == "matched":
                state.matched = list(json.loads(value))
            elif key.startswith("rule:"):
                state.rules[key[5:]] = value
            elif key.startswith("fail:"):
                state.failures[key[5:]] = int(value)
            elif key == "runs":
                state.runs = int(value)
            elif key == "ends":
                state.ends = int(value)
            elif key == "kept":
                state.kept = value == "1"
        return state


class Ledger:
    """Reads and writes event ledgers in Redis."""

    def __init__(self, redis: aioredis.Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._begin = redis.register_script(_BEGIN)

    async def begin(self, event_id: str) -> EventState:
        """Count a new run of the event and load its ledger."""
        flat = await self._begin(keys=[keys.ledger(event_id)], args=[self.ttl])
        return EventState.parse(event_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def load(self, event_id: str) -> EventState:
        """The ledger as it is, without counting a run (for the CLI)."""
        raw = await hgetall(self.redis, keys.ledger(event_id))
        return EventState.parse(event_id, raw)

    async def end(self, state: EventState) -> None:
        """The current run ended normally (done, retried, deferred or dead-lettered)."""
        state.ends = await hincrby(self.redis, keys.ledger(state.event_id), "ends")

    async def _set(self, state: EventState, mapping: dict[str, Any]) -> None:
        await hset(self.redis, keys.ledger(state.event_id), mapping)

    async def record_matched(self, state: EventState, rules: list[str]) -> None:
        state.matched = list(rules)
        await self._set(state, {"matched": _dump(rules)})

    async def start_step(self, state: EventState, key: StepKey) -> None:
        record = StepRecord(STARTED, at=time.time())
        state.steps[key.field] = record
        await self._set(state, {key.field: _dump({"state": STARTED, "at": record.at})})

    async def finish_step(self, state: EventState, key: StepKey, output: Any, how: How) -> None:
        record = StepRecord(DONE, output, how, time.time())
        state.steps[key.field] = record
        payload = {"state": DONE, "output": output, "how": how, "at": record.at}
        await self._set(state, {key.field: _dump(payload)})

    async def abandon_step(self, state: EventState, key: StepKey) -> None:
        state.steps.pop(key.field, None)
        await hdel(self.redis, keys.ledger(state.event_id), key.field)

    async def set_rule(self, state: EventState, rule: str, outcome: RuleOutcome) -> None:
        state.rules[rule] = outcome
        await self._set(state, {f"rule:{rule}": outcome})

    async def add_failure(self, state: EventState, rule: str) -> int:
        count = await hincrby(self.redis, keys.ledger(state.event_id), f"fail:{rule}")
        state.failures[rule] = count
        return count

    async def keep(self, event_id: str) -> None:
        """Keep the ledger while the event has a rule in the dead-letter queue."""
        key = keys.ledger(event_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "kept", "1")
            pipe.persist(key)
            await pipe.execute()

    async def release(self, event_id: str) -> None:
        """Let the ledger expire again (nothing of the event is dead-lettered any more)."""
        key = keys.ledger(event_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(key, "kept")
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def reopen_rule(self, event_id: str, rule: str) -> None:
        """Let a dead-lettered rule run again (replay): clear its state and failure count.

        Its recorded steps stay, so the steps that succeeded are not repeated. Past crashes
        are forgiven so the replay gets a fresh crash budget too.
        """
        key = keys.ledger(event_id)
        runs = await hget(self.redis, key, "runs")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(key, f"rule:{rule}", f"fail:{rule}")
            pipe.hset(key, "ends", str(int(runs or 0)))
            await pipe.execute()


def _proves_done(tool: Tool, exc: CalcomError) -> bool:
    """An answer to a repeated call showing the interrupted first call took effect."""
    if tool.method == "DELETE":
        return exc.status == 404
    return tool.method == "POST" and exc.status == 409


def _proves_nothing_happened(exc: Exception) -> bool:
    if isinstance(exc, ToolValidationError):
        return True
    return isinstance(exc, CalcomError) and 400 <= exc.status < 500 and exc.status != 408


class ExactlyOnce:
    """Runs tool steps through the ledger (see the module docstring)."""

    def __init__(
        self, ledger: Ledger, client: CalcomClient, finders: Mapping[str, Finder] = FINDERS
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.finders = finders

    async def run(
        self,
        state: EventState,
        key: StepKey,
        tool: Tool,
        params: Mapping[str, Any],
        perform: Callable[[], Awaitable[Any]],
    ) -> tuple[Any, How]:
        """The step's output and how it was obtained."""
        record = state.steps.get(key.field)
        if record is not None and record.state == DONE:
            return record.output, "recorded"
        interrupted = record is not None
        if interrupted and tool.method == "POST":
            finder = self.finders.get(tool.name)
            if finder is not None:
                found = await finder(self.client, self.client.with_defaults(tool, params))
                if found is not None:
                    await self.ledger.finish_step(state, key, found, "found")
                    return found, "found"
        if not interrupted and tool.method in ("POST", "DELETE"):
            await self.ledger.start_step(state, key)
        try:
            output = await perform()
        except (CalcomError, ToolValidationError) as exc:
            if interrupted and isinstance(exc, CalcomError) and _proves_done(tool, exc):
                await self.ledger.finish_step(state, key, None, "already")
                return None, "already"
            if not interrupted and _proves_nothing_happened(exc) and key.field in state.steps:
                await self.ledger.abandon_step(state, key)
            raise
        await self.ledger.finish_step(state, key, output, "called")
        return output, "called"
