"""The step ledger: each rule step's effect on Cal.com happens once per event, across crashes.

arq delivers a job at least once: a worker killed mid-job (or cancelled at shutdown) leaves
the job to run again from the start. So every step that calls a tool is recorded in Redis -
one hash per event, ``calhooks:ledger:<event id>``, field ``step:[rule, step, index]`` - and a
re-run reuses what is recorded instead of calling Cal.com again.

How one step runs (``ExactlyOnce.run``):

1. **Recorded as done** - its output is returned; nothing is sent.
2. **Not recorded** - for a create (POST) or a delete, a ``started`` marker is written first;
   then the tool is called and its output recorded as ``done`` before the rule moves on.
   A GET or PATCH writes no marker: calling it again leaves Cal.com in the same state, so
   its output is recorded with the attempt's last write (if that is lost in a crash, the
   call is simply made again on the re-run).
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
  (one Redis write). A dead worker's attempt is re-run once its lease lapses
  (``CALHOOKS_WORKER_LEASE``, 10 s, see ``workers.leases``) and a live one's only after a
  retry delay; and an interrupted step whose call got no answer (a timeout, a lost
  connection, a dead worker) is looked up (or repeated) only once its ``started``
  marker is ``settle`` seconds old (workers: twice ``CALHOOKS_API_TIMEOUT``), the attempt
  deferred until then. A Cal.com that takes longer than that to apply a request it was sent
  can still get it twice.
* Step outputs are stored as given, except the fields the registry marks as credentials
  (a managed organization's API key, webhook secrets): they are sealed with
  ``CALHOOKS_ENCRYPTION_KEY`` (``calcom.sealing``; dropped without a key) and unsealed for
  the steps that reuse them. A rule whose later steps depend on a list that
  changed between attempts (say a for_each over a live GET) reuses the recorded list.

The hash also holds, per event: its format (``v``, see ``workers.formats``), the rules
matched on the first attempt (``matched``), each rule's final state (``rule:<name>``: done,
dead, skipped), its transient failures (``fail:<name>``), and run counters (``runs`` and
``ends``: a run that never ended was a crash, and a crash loop is dead-lettered instead of
retried forever).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.errors import CalcomError, ToolValidationError
from calhooks.service.calcom.sealing import Sealer
from calhooks.service.calcom.tools import Tool
from calhooks.workers import keys
from calhooks.workers.finders import FINDERS, Finder
from calhooks.workers.formats import LEDGER_FORMAT
from calhooks.workers.redistyped import hdel, hget, hgetall
from calhooks.workers.retries import Defer

STARTED = "started"
DONE = "done"

RuleOutcome = Literal["done", "dead", "skipped"]
How = Literal["called", "recorded", "found", "already"]

# Count a run, stamp the format (first writer), refresh the TTL unless the event is kept
# (dead-lettered), return the hash.
_BEGIN = """
redis.call('HINCRBY', KEYS[1], 'runs', 1)
redis.call('HSETNX', KEYS[1], 'v', ARGV[2])
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
    #: A started call that Cal.com answered (with an error): nothing of it is in flight.
    answered: bool = False


Pipe = Any  # a redis.asyncio pipeline


@dataclass
class EventState:
    """One event's ledger, loaded at the start of an attempt and kept current by its writes.

    Writes that exactly-once does not depend on (rule states, outputs of reads, failure
    counts) wait in ``pending`` and go out with the next write that must be durable, or in
    the pipeline that ends the attempt: one round trip instead of one per write.
    """

    event_id: str
    steps: dict[str, StepRecord] = field(default_factory=dict)
    matched: list[str] | None = None
    rules: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    ends: int = 0
    kept: bool = False
    #: Format of the hash (``workers.formats``; absent: 1, written before versioning).
    format: int = 1
    pending: dict[str, str] = field(default_factory=dict)
    #: Called with each durable write's pipeline, to send along other buffered writes.
    on_write: Callable[[Pipe], None] | None = None
    _release: bool = False

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
                    data["state"],
                    data.get("output"),
                    data.get("how"),
                    data.get("at", 0.0),
                    bool(data.get("answered", False)),
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
            elif key == "v":
                state.format = int(value) if value.isdigit() else 0
        return state


class Ledger:
    """Reads and writes event ledgers in Redis."""

    def __init__(self, redis: aioredis.Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._begin = redis.register_script(_BEGIN)

    async def begin(self, event_id: str) -> EventState:
        """Count a new run of the event and load its ledger."""
        flat = await self._begin(keys=[keys.ledger(event_id)], args=[self.ttl, LEDGER_FORMAT])
        return EventState.parse(event_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def load(self, event_id: str) -> EventState:
        """The ledger as it is, without counting a run (for the CLI)."""
        raw = await hgetall(self.redis, keys.ledger(event_id))
        return EventState.parse(event_id, raw)

    def end(self, state: EventState, pipe: Pipe) -> None:
        """Add to ``pipe``: the buffered writes and the end of this run (done, retried, ...)."""
        key = keys.ledger(state.event_id)
        if state.pending:
            pipe.hset(key, mapping=state.pending)
            state.pending = {}
        if state._release:
            pipe.hdel(key, "kept")
        pipe.hincrby(key, "ends", 1)
        if not state.kept:
            pipe.expire(key, self.ttl)
        state.ends += 1

    async def _durable(self, state: EventState, mapping: dict[str, str]) -> None:
        """Write ``mapping`` (and everything buffered) now, before the attempt goes on."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.ledger(state.event_id), mapping={**state.pending, **mapping})
            if state.on_write is not None:
                state.on_write(pipe)
            await pipe.execute()
        state.pending = {}

    async def write(self, state: EventState) -> None:
        """Write the buffered writes now."""
        if state.pending:
            await self._durable(state, {})

    def record_matched(self, state: EventState, rules: list[str]) -> None:
        state.matched = list(rules)
        state.pending["matched"] = _dump(rules)

    async def start_step(self, state: EventState, key: StepKey) -> None:
        record = StepRecord(STARTED, at=time.time())
        state.steps[key.field] = record
        await self._durable(state, {key.field: _dump({"state": STARTED, "at": record.at})})

    async def finish_step(
        self, state: EventState, key: StepKey, output: Any, how: How, *, durable: bool
    ) -> None:
        """Record a step's output; ``durable`` writes it before returning (creates, deletes)."""
        record = StepRecord(DONE, output, how, time.time())
        state.steps[key.field] = record
        payload = _dump({"state": DONE, "output": output, "how": how, "at": record.at})
        if durable:
            await self._durable(state, {key.field: payload})
        else:
            state.pending[key.field] = payload

    async def answered_step(self, state: EventState, key: StepKey) -> None:
        """A started call got an error answer: it is not in flight any more (no ``settle``)."""
        record = state.steps.get(key.field)
        if record is None or record.state != STARTED or record.answered:
            return
        state.steps[key.field] = StepRecord(STARTED, at=record.at, answered=True)
        marker = {"state": STARTED, "at": record.at, "answered": True}
        await self._durable(state, {key.field: _dump(marker)})

    async def abandon_step(self, state: EventState, key: StepKey) -> None:
        state.steps.pop(key.field, None)
        state.pending.pop(key.field, None)
        await hdel(self.redis, keys.ledger(state.event_id), key.field)

    def set_rule(self, state: EventState, rule: str, outcome: RuleOutcome) -> None:
        state.rules[rule] = outcome
        state.pending[f"rule:{rule}"] = outcome

    def add_failure(self, state: EventState, rule: str) -> int:
        count = state.failures.get(rule, 0) + 1
        state.failures[rule] = count
        state.pending[f"fail:{rule}"] = str(count)
        return count

    async def keep(self, state: EventState) -> None:
        """Keep the ledger (no expiry) while the event has a rule in the dead-letter queue."""
        key = keys.ledger(state.event_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={**state.pending, "kept": "1"})
            pipe.persist(key)
            await pipe.execute()
        state.pending = {}
        state.kept, state._release = True, False

    def release(self, state: EventState) -> None:
        """Let the ledger expire again when this run ends (nothing is dead-lettered now)."""
        state.kept, state._release = False, True

    async def release_now(self, event_id: str) -> None:
        """``release`` outside a run (dropping a dead letter)."""
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
        self,
        ledger: Ledger,
        client: CalcomClient,
        finders: Mapping[str, Finder] = FINDERS,
        *,
        sealer: Sealer | None = None,
        settle: float = 0.0,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.finders = finders
        #: Seals credentials in outputs before they are recorded (drops them without a key).
        self.sealer = sealer or Sealer(None)
        #: Seconds after an interrupted call was sent before it is looked up or repeated.
        self.settle = settle

    async def run(
        self,
        state: EventState,
        key: StepKey,
        tool: Tool,
        params: Mapping[str, Any],
        perform: Callable[[], Awaitable[Any]],
        *,
        client: CalcomClient | None = None,
    ) -> tuple[Any, How]:
        """The step's output and how it was obtained (``client``: the one ``perform`` calls
        with, which a finder looks with; the ledger's own without)."""
        client = client or self.client
        record = state.steps.get(key.field)
        if record is not None and record.state == DONE:
            return self.sealer.unseal_output(tool, record.output), "recorded"
        interrupted = record is not None
        if interrupted and record is not None and self.settle and not record.answered:
            age = time.time() - record.at
            if age < self.settle:
                raise Defer(self.settle - age, "an interrupted call may still be reaching Cal.com")
        if interrupted and tool.method == "POST":
            finder = self.finders.get(tool.name)
            if finder is not None:
                found = await finder(client, client.with_defaults(tool, params))
                if found is not None:
                    sealed = self.sealer.seal_output(tool, found)
                    await self.ledger.finish_step(state, key, sealed, "found", durable=True)
                    return found, "found"
        if not interrupted and tool.method in ("POST", "DELETE"):
            await self.ledger.start_step(state, key)
        try:
            output = await perform()
        except (CalcomError, ToolValidationError) as exc:
            if interrupted and isinstance(exc, CalcomError) and _proves_done(tool, exc):
                await self.ledger.finish_step(state, key, None, "already", durable=True)
                return None, "already"
            if not interrupted and _proves_nothing_happened(exc) and key.field in state.steps:
                await self.ledger.abandon_step(state, key)
            elif isinstance(exc, CalcomError):
                await self.ledger.answered_step(state, key)
            raise
        # A changed Cal.com is recorded before the rule goes on; a read's output may wait for
        # the attempt's last write (lost in a crash, the read is simply made again).
        durable = tool.method in ("POST", "DELETE")
        sealed = self.sealer.seal_output(tool, output)
        await self.ledger.finish_step(state, key, sealed, "called", durable=durable)
        return output, "called"
