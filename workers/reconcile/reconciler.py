"""One reconciliation pass: list, diff against the snapshot, emit, keep the new snapshot.

Redis keys (``calhooks:reconcile:<org>:``): ``snap:<kind>`` is the snapshot (a hash: entity
key -> compact JSON), ``next:<kind>`` the listing being gathered, ``state`` a hash with each
kind's paging cursor (``<kind>:skip``), whether its baseline exists (``<kind>:baseline``)
the kind a run continues with (``turn``) and the number of passes so far (``passes``).

A pass spends at most ``budget`` list calls (``None``: no bound). Each kind is listed page
by page (the largest page Cal.com allows; a kind with ``details``, attributes and their
options, takes pages small enough for a page and one call per item to fit what is left of
the budget) into ``next:<kind>``; a kind whose listing is not
complete when the budget runs out continues on the next pass, from its cursor - a large
organization is spread over several periods. A complete listing is diffed against the
snapshot: the first one is the baseline and emits nothing; later ones emit one event per
difference, then replace the snapshot. Event ids derive from the change, so a pass that
crashed after emitting emits the same ids again and the queue's de-duplication drops them; a
restart reads the snapshot from Redis and re-emits nothing. A derived kind (attribute option
assignments) is settled from its source's complete listing right after it, at no call. A
``calhooks.WEBHOOK_CHANGED`` on this ``deployment``'s own webhook also sets
``service.events.reapply_key``: the web process re-applies the webhook plan
(``service.subscriptions.startup``).

Every pass but a dry run is added to the history (``records.add_pass``, done or failed) with
the events it queued (``records.add_events``), for the console. ``dry_run`` lists into
memory, writes nothing and returns the events it would emit.
Bookings updated less than ``grace`` seconds ago wait for the next pass (their delivery may
still be on its way); their snapshot entry keeps its previous value.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.core.webhookmark import owner_of
from calhooks.service.events import Event, reapply_key
from calhooks.workers import keys
from calhooks.workers.reconcile import bookings, metrics, records, triggers
from calhooks.workers.reconcile.emit import Emitter, change_id
from calhooks.workers.reconcile.entities import BOOKINGS, DERIVED, KINDS, Kind

logger = structlog.get_logger(__name__)


@dataclass
class RunReport:
    """What one pass did."""

    calls: int = 0
    complete: list[str] = field(default_factory=list)
    baselined: list[str] = field(default_factory=list)
    pending: str | None = None
    seen: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    queued: int = 0
    #: The events actually queued (not already queued by an earlier pass).
    queued_events: list[Event] = field(default_factory=list)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _decode(raw: Mapping[Any, Any]) -> dict[str, dict[str, Any]]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): json.loads(v) for k, v in raw.items()}


def _make_event(
    trigger: str,
    payload: dict[str, Any],
    observed: float,
    connection: str | None,
    *id_parts: Any,
) -> Event:
    created = _iso(observed)
    return Event(
        id=change_id("reconcile", trigger, *id_parts),
        trigger=trigger,
        created_at=created,
        payload=payload,
        raw={"triggerEvent": trigger, "createdAt": created, "payload": payload},
        received_at=observed,
        connection=connection,
        source=triggers.SOURCE,
    )


class Reconciler:
    """Runs passes for one organization (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        client: CalcomClient,
        *,
        org_id: int,
        queue_name: str,
        dedupe_window: int,
        budget: int | None = None,
        grace: float = 0.0,
        kinds: Sequence[Kind] = KINDS,
        deployment: str | None = None,
        connection: str | None = None,
        name: str | None = None,
    ) -> None:
        self.redis = redis
        self.client = client
        self.org_id = org_id
        #: The connection's PCID (``None``: the environment's organization) and its name.
        self.connection = connection
        #: The organization's records (``records.Org``): a connection's are keyed by its PCID.
        self.org: records.Org = connection if connection is not None else org_id
        self.label = records.organization_label(self.org, name)
        self.budget = budget
        self.grace = grace
        self.kinds = tuple(kinds)
        self.deployment = deployment
        self.emitter = Emitter(redis, queue_name=queue_name, dedupe_window=dedupe_window)

    async def run(self, *, dry_run: bool = False, holder: str | None = None) -> RunReport:
        """One pass; returns what it listed and the events it emitted (or would emit).

        A pass that is not a dry run is added to the history (``records``), done or failed,
        with ``holder`` (default: this process) and the events it queued.
        """
        report = RunReport()
        started, clock = time.time(), time.monotonic()
        try:
            await self._pass(report, dry_run=dry_run)
        except Exception as exc:
            if not dry_run:
                with contextlib.suppress(RedisError, OSError):  # Redis away: nothing to keep
                    await self._record(report, started, clock, holder, error=exc)
            raise
        if not dry_run:
            metrics.PASSES.labels("done").inc()
            metrics.CALLS.inc(report.calls)
            for kind_name, count in report.seen.items():
                metrics.ENTITIES.labels(kind_name).set(count)
            await self._record(report, started, clock, holder)
        logger.info(
            "reconcile.done",
            org=self.org_id,
            connection=self.connection,
            calls=report.calls,
            complete=report.complete,
            baselined=report.baselined,
            pending=report.pending,
            seen=report.seen,
            events=len(report.events),
            queued=report.queued,
            dry_run=dry_run,
        )
        return report

    async def _record(
        self,
        report: RunReport,
        started: float,
        clock: float,
        holder: str | None,
        *,
        error: BaseException | None = None,
    ) -> None:
        """Add the pass and the events it queued to the history the console reads."""
        await records.add_events(
            self.redis,
            self.org,
            (
                records.QueuedEvent(
                    event.id, event.trigger, records.subject_of(event.payload), event.received_at
                )
                for event in report.queued_events
            ),
        )
        await records.add_pass(
            self.redis,
            self.org,
            records.PassRecord(
                started=round(started, 3),
                duration=round(time.monotonic() - clock, 3),
                outcome="done" if error is None else "failed",
                holder=holder or records.this_process(),
                calls=report.calls,
                budget=self.budget,
                seen=dict(report.seen),
                events=records.counts(event.trigger for event in report.queued_events),
                duplicates=len(report.events) - report.queued if error is None else 0,
                complete=list(report.complete),
                baselined=list(report.baselined),
                pending=report.pending,
                error=None if error is None else f"{type(error).__name__}: {str(error)[:200]}",
                organization=self.label,
                connection=self.connection,
            ),
        )

    async def _pass(self, report: RunReport, *, dry_run: bool) -> None:
        state = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (await self.redis.hgetall(records.state_key(self.org))).items()  # type: ignore[misc]
        }
        names = [kind.name for kind in self.kinds]
        start = names.index(state["turn"]) if state.get("turn") in names else 0
        for step in range(len(self.kinds)):
            kind = self.kinds[(start + step) % len(self.kinds)]
            listed = await self._list(kind, state, report, dry_run=dry_run)
            if listed is None:
                report.pending = kind.name
                if not dry_run:
                    await self.redis.hset(records.state_key(self.org), "turn", kind.name)  # type: ignore[misc]
                break
            report.seen[kind.name] = len(listed)
            await self._settle(kind, listed, state, report, dry_run=dry_run)
            if kind.name in DERIVED:
                derived, derive = DERIVED[kind.name]
                entries = derive(listed)
                report.seen[derived.name] = len(entries)
                await self._settle(derived, entries, state, report, dry_run=dry_run)
        if not dry_run:
            await self.redis.hincrby(records.state_key(self.org), "passes", 1)  # type: ignore[misc]

    async def _list(
        self, kind: Kind, state: dict[str, str], report: RunReport, *, dry_run: bool
    ) -> dict[str, dict[str, Any]] | None:
        """The kind's complete listing, or ``None`` when the budget ran out first."""
        staging = records.staging_key(self.org, kind.name)
        skip = 0 if dry_run else int(state.get(f"{kind.name}:skip", 0))
        gathered: dict[str, dict[str, Any]] = {}
        if skip == 0 and not dry_run:
            await self.redis.delete(staging)
        while True:
            take = kind.page_size
            # A kind with details reads a page and one more call per item: the page is
            # made small enough for the page and its details to fit what is left.
            need = 2 if kind.details else 1
            left = None if self.budget is None else self.budget - report.calls
            if left is not None and left < need:
                if not dry_run:
                    await self.redis.hset(
                        records.state_key(self.org), f"{kind.name}:skip", str(skip)
                    )  # type: ignore[misc]
                return None
            if kind.details and left is not None:
                take = min(take, left - 1)
            page = await self.client.request(kind.operation, {"take": take, "skip": skip})
            report.calls += 1
            items = page.data if isinstance(page.data, list) else []
            compact = {kind.key(item): kind.compact(item) for item in items}
            if kind.details:
                operation, parameters, field_name = kind.details
                for item in items:
                    detail = await self.client.request(operation, parameters(item))
                    report.calls += 1
                    compact[kind.key(item)][field_name] = detail.data
            gathered.update(compact)
            if compact and not dry_run:
                await self.redis.hset(  # type: ignore[misc]
                    staging, mapping={k: _dumps(v) for k, v in compact.items()}
                )
            skip += len(items)
            has_next = (page.pagination or {}).get("hasNextPage")
            if has_next is False or (has_next is None and len(items) < take) or not items:
                break
        if dry_run or not skip:
            return gathered
        await self.redis.hdel(records.state_key(self.org), f"{kind.name}:skip")  # type: ignore[misc]
        return _decode(await self.redis.hgetall(staging))  # type: ignore[misc]

    async def _settle(
        self,
        kind: Kind,
        listed: dict[str, dict[str, Any]],
        state: dict[str, str],
        report: RunReport,
        *,
        dry_run: bool,
    ) -> None:
        """Diff a complete listing against the snapshot; queue its events; keep it."""
        snapshot_key = records.snapshot_key(self.org, kind.name)
        before = _decode(await self.redis.hgetall(snapshot_key))  # type: ignore[misc]
        observed = time.time()
        baseline = state.get(f"{kind.name}:baseline") == "1"
        after = dict(listed)
        if kind is BOOKINGS:
            after = self._hold_young(before, after, observed)
        events: list[Event] = []
        if baseline:
            if kind is BOOKINGS:
                events = await self._missed_bookings(before, after, observed)
            else:
                events = self._changes(kind, before, after, observed)
        report.events += events
        report.complete.append(kind.name)
        if not baseline:
            report.baselined.append(kind.name)
        if dry_run:
            return
        # Queued before the snapshot moves on: a crash in between re-emits the same ids
        # next pass (dropped as duplicates), never loses them.
        for event in events:
            if await self.emitter.emit(event):
                report.queued += 1
                report.queued_events.append(event)
                metrics.EVENTS.labels(event.trigger).inc()
            if self._own_webhook_changed(event):
                assert self.deployment is not None
                await self.redis.set(reapply_key(self.deployment), event.id)
                logger.info(
                    "reconcile.reapply_requested",
                    org=self.org_id,
                    connection=self.connection,
                    event_id=event.id,
                )
        staging = records.staging_key(self.org, kind.name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(snapshot_key, staging)
            if after:
                pipe.hset(snapshot_key, mapping={k: _dumps(v) for k, v in after.items()})
            pipe.hset(records.state_key(self.org), f"{kind.name}:baseline", "1")
            await pipe.execute()

    def _own_webhook_changed(self, event: Event) -> bool:
        """Whether ``event`` is a change of this deployment's own webhook in this organization
        (before or after carries its ownership mark): the web process is then asked to
        re-apply the plans (of every organization)."""
        if event.trigger != triggers.WEBHOOK_CHANGED or self.deployment is None:
            return False
        # A connection's webhook is marked ``<deployment>.<pcid>`` (subscriptions.ownership).
        mark = (
            self.deployment if self.connection is None else f"{self.deployment}.{self.connection}"
        )
        return any(
            owner_of(str(side.get("subscriberUrl", ""))) == mark
            for side in (event.payload.get("before"), event.payload.get("after"))
            if isinstance(side, Mapping)
        )

    def _hold_young(
        self,
        before: dict[str, dict[str, Any]],
        after: dict[str, dict[str, Any]],
        now: float,
    ) -> dict[str, dict[str, Any]]:
        if self.grace <= 0:
            return after
        held = dict(after)
        for uid, booking in after.items():
            updated = booking.get("updatedAt")
            try:
                moment = datetime.fromisoformat(str(updated).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            if now - moment < self.grace:
                if uid in before:
                    held[uid] = before[uid]
                else:
                    del held[uid]
        return held

    def _changes(
        self,
        kind: Kind,
        before: dict[str, dict[str, Any]],
        after: dict[str, dict[str, Any]],
        observed: float,
    ) -> list[Event]:
        events = []
        for key in sorted(before.keys() | after.keys()):
            old, new = before.get(key), after.get(key)
            if old == new:
                continue
            trigger = kind.change(old, new)
            if trigger is None:
                continue
            payload: dict[str, Any] = {
                "kind": kind.name,
                "id": key,
                "before": old,
                "after": new,
                "source": triggers.SOURCE,
                "observedAt": _iso(observed),
            }
            if trigger in (
                triggers.ATTRIBUTE_OPTION_ASSIGNED,
                triggers.ATTRIBUTE_OPTION_UNASSIGNED,
            ):
                entry = new or old or {}
                payload.update(
                    attribute=entry["attribute"], option=entry["option"], user=entry["user"]
                )
            if trigger == triggers.WEBHOOK_CHANGED:
                payload["change"] = (
                    "created" if old is None else "deleted" if new is None else "updated"
                )
            events.append(
                _make_event(trigger, payload, observed, self.connection, self.org, key, old, new)
            )
        return events

    async def _missed_bookings(
        self,
        before: dict[str, dict[str, Any]],
        after: dict[str, dict[str, Any]],
        observed: float,
    ) -> list[Event]:
        changed = [uid for uid in sorted(after) if before.get(uid) != after[uid]]
        if not changed:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid in changed:
                pipe.hmget(keys.booking(uid, self.connection), ["created", "ended"])
            records = await pipe.execute()
        events = []
        for uid, (created, ended) in zip(changed, records, strict=True):
            record = {
                name: value
                for name, value in (("created", created), ("ended", ended))
                if value is not None
            }
            trigger = bookings.missed(before.get(uid), after[uid], record)
            if trigger is None:
                continue
            payload = {
                k: v for k, v in after[uid].items() if k not in ("updatedAt", "rescheduledToUid")
            }
            payload["source"] = triggers.SOURCE
            payload["observedAt"] = _iso(observed)
            state = after[uid].get("status"), after[uid].get("startTime")
            events.append(
                _make_event(trigger, payload, observed, self.connection, self.org, uid, *state)
            )
        return events
