"""``process_event``: the arq job that runs every matching rule for one event.

One job per event (the intake queues ``process_event(event_dict)`` with the event id as the
job id). An attempt:

1. counts the run in the event's ledger (``calhooks.workers.ledger``) - runs that never ended were
   crashes, and an event that keeps killing its worker is dead-lettered, not retried forever;
2. takes the event's turn with its booking's chain (``calhooks.workers.ordering``; the booking,
   chain and replaced uid go to the delivery log), or is skipped as stale;
3. matches the rules (once: the first attempt's match is recorded, so a rule added later
   does not run for an old event, and a rule since changed to no longer match is skipped);
4. runs each matched rule not yet done; each tool step goes through the ledger
   (``ExactlyOnce``), so steps that succeeded on an earlier attempt are not repeated;
5. sorts failures: a transient one (429, 5xx, Cal.com unreachable) is retried with
   ``arq.Retry`` after a back-off (``workers.retries``) up to ``CALHOOKS_WORKER_MAX_TRIES``;
   a permanent one, or the last transient one, sends the rule to the dead-letter queue
   (``calhooks.workers.deadletter``). Other rules of the event are unaffected.

A job or ledger written by a newer release (``workers.formats``) is left for a worker of
that release: re-queued for ``NEWER_FORMAT_DEFER`` seconds, the event's records untouched.

Waiting for something outside the event (its booking's earlier events, the shared rate
limit) raises ``Defer`` and re-queues the job without counting an attempt. Each attempt has
its own deadline (``CALHOOKS_WORKER_JOB_TIMEOUT``), shorter than arq's own timeout - which
would fail the job without a dead letter - and expiring into a transient failure.

Every Cal.com call of an event is made with its organization's client
(``workers.clients``: the event's connection's credentials, org id and base URL, or the
environment's); its rules see that organization (``connections:``/``tenants:``, its
``env``). An event whose connection cannot be used (removed, without an org id) has its
matched rules dead-lettered with the reason.

Everything that happens is written to the event's event log (``workers.eventlog``) and
counted in ``calhooks.workers.metrics`` under the organization's ``connection`` label.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from arq import Retry

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.sealing import Sealer
from calhooks.service.calcom.tools import TOOLS, get_tool
from calhooks.service.core import eventindex, timeseries
from calhooks.workers import metrics, ratelimit
from calhooks.workers.clients import ConnectionUnavailable, Organizations, Scope
from calhooks.workers.deadletter import DeadLetter, DeadLetterQueue, describe_error, entry_id
from calhooks.workers.eventlog import EventLog, EventRecorder
from calhooks.workers.failures import FailedAt, StepFailure, deciding_error, deferral_in
from calhooks.workers.formats import EVENTLOG_FORMAT, LEDGER_FORMAT, NEWER_FORMAT_DEFER, NewerFormat
from calhooks.workers.leases import REDIS_AWAY
from calhooks.workers.ledger import EventState, ExactlyOnce, Ledger, StepKey
from calhooks.workers.ordering import BookingOrder, Turn
from calhooks.workers.readcache import ReadCache, trigger_entities, write_entities
from calhooks.workers.retries import Defer, RetryPolicy, is_transient
from calhooks.workers.rules import EventLike as RuleEvent
from calhooks.workers.rules import StepCall
from calhooks.workers.rules.scope import Origin

logger = structlog.get_logger(__name__)


class EventLike(RuleEvent, Protocol):
    """What the workers read of ``service.events.Event``: what the rules read, its
    connection (PCID; ``None``: the environment's organization), plus its dict."""

    @property
    def connection(self) -> str | None: ...

    def to_dict(self) -> dict[str, Any]: ...


class NamedRule(Protocol):
    @property
    def name(self) -> str: ...


Invoke = Callable[[StepCall], Awaitable[Any]]
R = TypeVar("R", bound=NamedRule)


class Rules(Protocol[R]):
    """The rules as the processor uses them: ``calhooks.workers.rules.RuleSet``, or a test's own."""

    def matching(
        self,
        event: EventLike,
        *,
        why_not: dict[str, str] | None = None,
        origin: Origin | None = None,
    ) -> Sequence[R]: ...

    def named(self, name: str) -> R | None: ...

    async def run(
        self, rule: R, event: EventLike, invoke: Invoke, *, origin: Origin | None = None
    ) -> object: ...


@dataclass
class Attempt:
    """What one run of one event carries around."""

    event: EventLike
    state: EventState
    recorder: EventRecorder
    deadline: float
    #: The event's organization: its client, how the rules see it, its metrics label.
    scope: Scope
    #: Writes for the attempt's last pipeline besides the ledger's and the log's.
    closing: list[Callable[[Any], None]] = field(default_factory=list)


class Processor:
    """Runs events through the rules; one per worker process (see ``workers.bootstrap``)."""

    def __init__(
        self,
        *,
        rules: Callable[[], Rules[Any]],
        client: CalcomClient,
        ledger: Ledger,
        dead_letters: DeadLetterQueue,
        eventlog: EventLog,
        order: BookingOrder,
        policy: RetryPolicy,
        job_timeout: float,
        worker_name: str,
        sealer: Sealer | None = None,
        step_settle: float = 0.0,
        cache: ReadCache | None = None,
        organizations: Organizations | None = None,
    ) -> None:
        self.rules = rules
        self.client = client
        #: Each event's organization (without: connections' events cannot run).
        self.organizations = organizations
        self.ledger = ledger
        self.once = ExactlyOnce(ledger, client, sealer=sealer, settle=step_settle)
        self.dead_letters = dead_letters
        self.eventlog = eventlog
        self.order = order
        self.policy = policy
        self.job_timeout = job_timeout
        self.worker_name = worker_name
        #: The shared read cache for steps with ``cache:`` (``None``: every read is made).
        self.cache = cache

    async def process(self, event: EventLike) -> dict[str, Any]:
        """One attempt at an event; raises ``arq.Retry`` to be run again."""
        recorder = self.eventlog.recorder(event.id)
        token = recorder.activate()
        ticket = ratelimit.TICKET.set(event.id)
        structlog.contextvars.bind_contextvars(event_id=event.id, trigger=event.trigger)
        if event.connection is not None:
            structlog.contextvars.bind_contextvars(connection=event.connection)
        scope = await self.scope_of(event)
        state = await self.ledger.begin(event.id)
        if self.cache is not None and (changed := trigger_entities(event.trigger)):
            await self.cache.invalidate(scope.cache_org(scope.client.org_id), changed)
        if state.runs == 1:
            metrics.PICKUP_SECONDS.labels(connection=scope.label).observe(
                max(0.0, time.time() - event.received_at)
            )
        recorder.add(
            "attempt",
            v=EVENTLOG_FORMAT,
            attempt=state.runs,
            worker=self.worker_name,
            trigger=event.trigger,
            received_at=event.received_at,
            **_connection_fields(scope, tenant=True),
        )
        recorder.kept = state.kept
        state.on_write = recorder.write_into
        attempt = Attempt(event, state, recorder, time.monotonic() + self.job_timeout, scope)
        metrics.JOBS_RUNNING.inc()
        try:
            return await self._process(attempt)
        except Defer as deferred:
            recorder.add("deferred", delay=round(deferred.delay, 3), reason=deferred.reason)
            metrics.EVENTS.labels(connection=scope.label, outcome="deferred").inc()
            # One line per event at info, not one per wait (a cancellation may wait 30 times).
            log_deferral = logger.info if state.runs <= 1 else logger.debug
            log_deferral("event.deferred", delay=deferred.delay, reason=deferred.reason)
            raise Retry(defer=deferred.delay) from None
        finally:
            metrics.JOBS_RUNNING.dec()
            await asyncio.shield(self._end(attempt))
            recorder.deactivate(token)
            ratelimit.TICKET.reset(ticket)
            structlog.contextvars.unbind_contextvars("event_id", "trigger", "connection")

    async def scope_of(self, event: EventLike) -> Scope:
        """The event's organization (the environment's without ``organizations``, unless the
        event came through a connection: then one that cannot be used)."""
        if self.organizations is not None:
            return await self.organizations.scope(event.connection)
        if event.connection is None:
            return Scope(self.client, None, metrics.ENV_LABEL)
        origin = Origin(event.connection, event.connection, "")
        problem = f"connection {event.connection} cannot be read: this worker has no connections"
        return Scope(self.client, origin, metrics.OTHER_LABEL, problem)

    async def _end(self, attempt: Attempt) -> None:
        """The attempt's last write, in one round trip: ledger, booking order, event log."""
        try:
            async with self.ledger.redis.pipeline(transaction=False) as pipe:
                self.ledger.end(attempt.state, pipe)
                for write in attempt.closing:
                    write(pipe)
                attempt.recorder.write_into(pipe)
                try:  # the console's records never cost the attempt its ledger write
                    self._note_activity(attempt, pipe)
                except Exception:
                    logger.exception("event.activity_failed")
                await pipe.execute()
        except Exception:
            logger.exception("event.end_write_failed")

    def _note_activity(self, attempt: Attempt, pipe: Any) -> None:
        """The console's event summary and per-minute counts, in the attempt's last write."""
        event, state = attempt.event, attempt.state
        outcome = eventindex.outcome_of(state.matched, state.rules)
        started = attempt.deadline - self.job_timeout
        timeseries.RECORDER.count(f"worker.{outcome}")
        timeseries.RECORDER.observe_ms("worker.ms", (time.monotonic() - started) * 1000)
        timeseries.RECORDER.write_into(pipe)
        summary = {
            "id": event.id,
            "trigger": event.trigger,
            "uid": event.payload.get("uid"),
            "received_at": event.received_at,
            "outcome": outcome,
            "rules": {rule: state.rules.get(rule, "pending") for rule in state.matched or []},
            "attempts": state.runs,
            **_connection_fields(attempt.scope, tenant=True),
        }
        eventindex.write_into(pipe, summary, ttl=self.ledger.ttl)

    async def _process(self, attempt: Attempt) -> dict[str, Any]:
        event, state, recorder = attempt.event, attempt.state, attempt.recorder
        if state.format != LEDGER_FORMAT:
            raise Defer(NEWER_FORMAT_DEFER, f"ledger format {state.format} is not this release's")
        if state.crashes >= self.policy.max_tries:
            return await self._give_up_crashing(attempt)
        async with self.order.turn(
            event.id, event.trigger, event.payload, event.received_at, event.connection
        ) as turn:
            if turn.uid is not None:
                recorder.add("booking", **turn.describe())
            if turn.skip_reason is not None:
                return await self._skip(attempt, turn, turn.skip_reason)
            rules = self.rules()
            not_matched: dict[str, str] = {}
            origin = attempt.scope.origin
            current = {
                rule.name: rule
                for rule in rules.matching(event, why_not=not_matched, origin=origin)
            }
            if state.matched is None:
                self.ledger.record_matched(state, list(current))
                recorder.add("matched", rules=list(current), not_matched=not_matched)
            if attempt.scope.problem is not None:
                return await self._connection_unusable(attempt, turn, attempt.scope.problem)
            dead_at_start = [n for n in state.matched or [] if state.rules.get(n) == "dead"]
            retries: list[tuple[str, BaseException]] = []
            for name in state.matched or []:
                if name in state.rules:
                    continue
                rule = current.get(name)
                if rule is None:
                    reason = (
                        "no longer defined" if rules.named(name) is None else "no longer matches"
                    )
                    await self._rule_skipped(attempt, name, reason)
                    continue
                failure = await self._run_rule(attempt, rules, rule)
                if failure is not None:
                    retries.append((name, failure))
            if retries:
                delay = max(self.policy.delay(state.failures[n], exc) for n, exc in retries)
                reason = "; ".join(f"{n}: {describe_error(exc)['message']}" for n, exc in retries)
                recorder.add("retry", delay=round(delay, 3), reason=reason)
                metrics.EVENTS.labels(connection=attempt.scope.label, outcome="retried").inc()
                logger.info("event.retry", delay=delay, rules=[n for n, _ in retries])
                raise Retry(defer=delay)
            if dead_at_start and await self._reopened_meanwhile(event.id, dead_at_start):
                raise Defer(0.0, "a dead-lettered rule was replayed during this attempt")
            return await self._complete(attempt, turn)

    async def _run_rule(
        self, attempt: Attempt, rules: Rules[Any], rule: NamedRule
    ) -> BaseException | None:
        """Run one rule; returns the error if it should be retried."""
        state, recorder = attempt.state, attempt.recorder
        log = logger.bind(rule=rule.name)
        label = attempt.scope.label

        async def invoke(call: StepCall) -> Any:
            return await self._step(attempt, call)

        try:
            async with asyncio.timeout_at(self._loop_deadline(attempt)):
                await rules.run(rule, attempt.event, invoke, origin=attempt.scope.origin)
        except Defer:
            raise
        except Exception as exc:
            deferred = deferral_in(exc)
            if deferred is not None:
                raise deferred from None
            error, call = deciding_error(exc)
            if isinstance(error, TimeoutError) and call is None:
                error = TimeoutError(
                    f"attempt ran past CALHOOKS_WORKER_JOB_TIMEOUT ({self.job_timeout}s)"
                )
            metrics.RULES.labels(connection=label, outcome="failed").inc()
            if is_transient(error):
                failures = self.ledger.add_failure(state, rule.name)
                if not self.policy.gives_up_after(failures):
                    recorder.add(
                        "rule", rule=rule.name, outcome="retry", error=describe_error(error)
                    )
                    metrics.RULES.labels(connection=label, outcome="retried").inc()
                    log.warning("rule.retry", failures=failures, error=str(error))
                    return error
                attempts = failures
            else:
                attempts = state.failures.get(rule.name, 0) + 1
            await self._dead_letter(attempt, rule.name, error, call, attempts)
            return None
        self.ledger.set_rule(state, rule.name, "done")
        recorder.add("rule", rule=rule.name, outcome="done")
        metrics.RULES.labels(connection=label, outcome="done").inc()
        if state.kept:
            await self.dead_letters.remove(entry_id(attempt.event.id, rule.name))
        return None

    def _loop_deadline(self, attempt: Attempt) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (attempt.deadline - time.monotonic())

    async def _step(self, attempt: Attempt, call: StepCall) -> Any:
        tool = get_tool(call.tool)
        key = StepKey(call.rule, call.step, call.index)
        started = time.perf_counter()
        cached: list[str] = []
        scope = attempt.scope
        client = scope.client

        async def perform() -> Any:
            if call.cache is None or self.cache is None or not tool.read_only:
                return await client.call(tool, **call.params)
            params = client.with_defaults(tool, call.params)
            output, how = await self.cache.read(
                tool,
                params,
                call.cache,
                lambda: client.call(tool, **params),
                org=scope.cache_org(params.get("orgId", "-")),
            )
            cached.append(how)
            return output

        try:
            output, how = await self.once.run(
                attempt.state, key, tool, call.params, perform, client=client
            )
            if self.cache is not None and not tool.read_only and how != "recorded":
                org = client.with_defaults(tool, call.params).get("orgId")
                await self.cache.invalidate(scope.cache_org(org), write_entities(tool))
        except Defer:
            raise
        except Exception as exc:
            elapsed = time.perf_counter() - started
            metrics.STEP_SECONDS.labels(tool=tool.name, outcome="error").observe(elapsed)
            attempt.recorder.add(
                "step",
                rule=call.rule,
                step=call.step,
                index=call.index,
                tool=tool.name,
                ms=round(elapsed * 1000, 2),
                error=describe_error(exc),
            )
            raise StepFailure(call, exc) from exc
        elapsed = time.perf_counter() - started
        metrics.STEP_SECONDS.labels(tool=tool.name, outcome=how).observe(elapsed)
        attempt.recorder.add(
            "step",
            rule=call.rule,
            step=call.step,
            index=call.index,
            tool=tool.name,
            how=how,
            ms=round(elapsed * 1000, 2),
            **({"cache": cached[0]} if cached else {}),
        )
        return output

    async def _dead_letter(
        self,
        attempt: Attempt,
        rule: str,
        error: BaseException,
        call: FailedAt | None,
        attempts: int,
    ) -> None:
        event, state = attempt.event, attempt.state
        entry = await self.dead_letters.add(
            DeadLetter(
                event_id=event.id,
                trigger=event.trigger,
                rule=rule,
                error=describe_error(error),
                attempts=attempts,
                event=event.to_dict(),
                step=call.step if call else None,
                index=call.index if call else None,
                tool=call.tool if call else None,
                params=self._recorded_params(call),
                **_connection_fields(attempt.scope),
            )
        )
        self.ledger.set_rule(state, rule, "dead")
        if not state.kept:
            await self.ledger.keep(state)
        attempt.recorder.kept = True
        attempt.recorder.add(
            "rule", rule=rule, outcome="dead_lettered", error=describe_error(error)
        )
        attempt.recorder.add("dead_lettered", rule=rule, dead_letter=entry.id)
        metrics.RULES.labels(connection=attempt.scope.label, outcome="dead_lettered").inc()
        logger.warning("rule.dead_lettered", rule=rule, dead_letter=entry.id, error=str(error))

    def _recorded_params(self, call: FailedAt | None) -> dict[str, Any] | None:
        """A failed call's parameters as a dead letter keeps them: credentials sealed."""
        if call is None or call.params is None:
            return None
        tool = TOOLS.get(call.tool) if call.tool else None
        params = dict(call.params)
        return self.once.sealer.seal_params(tool, params) if tool is not None else params

    async def _rule_skipped(self, attempt: Attempt, rule: str, reason: str) -> None:
        self.ledger.set_rule(attempt.state, rule, "skipped")
        attempt.recorder.add("rule", rule=rule, outcome="skipped", reason=reason)
        if attempt.state.kept:
            await self.dead_letters.remove(entry_id(attempt.event.id, rule))

    def _finish_turn(self, attempt: Attempt, turn: Turn) -> None:
        """Record the event in its booking and release the turn in the attempt's last write.

        The lock is released only after the booking's new state is written (same pipeline),
        so the booking's next event reads that state.
        """
        event = attempt.event
        turn.released = True  # the turn's own exit must not release it before that write
        attempt.closing.append(
            lambda pipe: self.order.finish(pipe, turn, event.id, event.trigger, event.received_at)
        )

    async def _reopened_meanwhile(self, event_id: str, dead: list[str]) -> bool:
        fresh = await self.ledger.load(event_id)
        return any(fresh.rules.get(rule) != "dead" for rule in dead)

    async def _complete(self, attempt: Attempt, turn: Turn) -> dict[str, Any]:
        event, state = attempt.event, attempt.state
        self._finish_turn(attempt, turn)
        dead = [rule for rule, outcome in state.rules.items() if outcome == "dead"]
        if state.kept and not await self.dead_letters.event_entries(event.id, dead):
            self.ledger.release(state)
            attempt.recorder.kept = False
        outcome = "dead_lettered" if dead else "processed"
        attempt.recorder.add("done")
        metrics.EVENTS.labels(connection=attempt.scope.label, outcome=outcome).inc()
        logger.info("event.done", rules=state.rules)
        return {"rules": dict(state.rules)}

    async def _skip(self, attempt: Attempt, turn: Turn, reason: str) -> dict[str, Any]:
        state = attempt.state
        for name in state.matched or []:
            if name not in state.rules:
                await self._rule_skipped(attempt, name, reason)
        self._finish_turn(attempt, turn)
        attempt.recorder.add("skipped", reason=reason)
        metrics.EVENTS.labels(connection=attempt.scope.label, outcome="skipped").inc()
        logger.info("event.skipped", reason=reason)
        return {"skipped": reason}

    async def _give_up_crashing(self, attempt: Attempt) -> dict[str, Any]:
        """The worker died ``max_tries`` times in this event: dead-letter what is left."""
        event, state = attempt.event, attempt.state
        error = RuntimeError(
            f"a worker died {state.crashes} times while running this event (killed, out of "
            "memory?); not retried again"
        )
        pending = [n for n in (state.matched or []) if n not in state.rules]
        if state.matched is None:
            origin = attempt.scope.origin
            pending = [rule.name for rule in self.rules().matching(event, origin=origin)]
            self.ledger.record_matched(state, pending)
        for name in pending:
            await self._dead_letter(attempt, name, error, None, state.runs)
        attempt.recorder.add("done")
        metrics.EVENTS.labels(connection=attempt.scope.label, outcome="dead_lettered").inc()
        return {"rules": dict(state.rules)}

    async def _connection_unusable(
        self, attempt: Attempt, turn: Turn, problem: str
    ) -> dict[str, Any]:
        """The event's connection cannot be used: its matched rules go to the dead-letter
        queue with the reason (not retried: a replay once it is fixed runs them)."""
        state = attempt.state
        error = ConnectionUnavailable(problem)
        logger.warning("event.connection_unusable", problem=problem)
        for name in state.matched or []:
            if name not in state.rules:
                await self._dead_letter(attempt, name, error, None, state.runs)
        return await self._complete(attempt, turn)


def _connection_fields(scope: Scope, *, tenant: bool = False) -> dict[str, Any]:
    """The connection of an event, for its records: PCID, name (and tenant) - none for the
    environment's organization, no name for a connection that no longer exists."""
    if scope.origin is None:
        return {}
    fields: dict[str, Any] = {"connection": scope.origin.pcid}
    if scope.origin.tenant:  # known: the connection exists
        fields["connection_name"] = scope.origin.name
        if tenant:
            fields["connection_tenant"] = scope.origin.tenant
    return fields


#: Seconds before an attempt cut short by a Redis outage is tried again.
REDIS_AWAY_DEFER = 1.0


async def process_event(ctx: dict[str, Any], event_data: dict[str, Any]) -> dict[str, Any]:
    """The arq job: ``ctx["calhooks"]`` is the worker's ``Runtime`` (``workers.bootstrap``).

    Redis going away mid-attempt re-queues the job (``Retry``) rather than failing it: arq
    would otherwise delete a failed job - the event lost - if Redis came back in time for
    its final write.
    """
    runtime = ctx["calhooks"]
    try:
        event = runtime.parse_event(event_data)
    except NewerFormat as exc:
        logger.warning("event.newer_format", error=str(exc), defer=NEWER_FORMAT_DEFER)
        raise Retry(defer=NEWER_FORMAT_DEFER) from exc
    try:
        result: dict[str, Any] = await runtime.processor.process(event)
    except REDIS_AWAY as exc:
        logger.warning("event.redis_away", event_id=event.id, error=type(exc).__name__)
        raise Retry(defer=REDIS_AWAY_DEFER) from exc
    return result
