"""Reconciliation's records, as the console reads them (``workers/reconcile/records.py``):
each pass in a bounded history (who ran it, how long, calls against the budget, entities
seen, events queued), the events it queued, the lock's holder, the snapshot's sizes, and a
pass asked for now, which a worker runs at once - against the sandbox over real HTTP and
the suite's real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.events import Event
from calhooks.workers.reconcile import periodic, records, triggers
from calhooks.workers.reconcile.reconciler import Reconciler, RunReport
from tests.sandbox.server import RunningSandbox
from tests.waiting import eventually
from tests.workers.test_reconcile import QUEUE, reconciler

CREATE_USER = "cal_organizations_users_controller_create_organization_user"


async def test_passes_and_the_events_they_queued_are_recorded(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await periodic.run_locked(reconciler(sandbox, redis_client, budget=40), holder="w-1")
    async with sandbox.client() as client:
        await client.call(CREATE_USER, email="newcomer@acme.example")
    report = await periodic.run_locked(reconciler(sandbox, redis_client, budget=40), holder="w-2")
    status = await records.read_status(redis_client, 1)
    assert status.total_passes == 2
    latest, first = status.passes
    assert (latest.holder, first.holder) == ("w-2", "w-1")
    assert latest.outcome == "done"
    assert latest.error is None
    assert latest.budget == 40
    assert latest.calls == report.calls > 0
    assert latest.duration >= 0
    assert first.baselined == latest.complete
    assert latest.baselined == []
    assert latest.events == {triggers.MEMBERSHIP_CREATED: 1, triggers.USER_CREATED: 1}
    assert latest.seen == report.seen
    assert first.events == {}
    assert status.snapshot["users"] == latest.seen["users"] == 4
    assert set(status.snapshot) == set(latest.complete)
    assert sorted(e.trigger for e in status.events) == [
        triggers.MEMBERSHIP_CREATED,
        triggers.USER_CREATED,
    ]
    assert {e.id for e in status.events} == {e.id for e in report.queued_events}
    [user] = [e for e in status.events if e.trigger == triggers.USER_CREATED]
    assert user.subject.startswith("users ")
    assert status.holder is None  # no pass running


async def test_a_failed_pass_is_recorded_with_its_error(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await reconciler(sandbox, redis_client).run()
    async with sandbox.client() as client:
        await client.call(CREATE_USER, email="unlucky@acme.example")
    failing = reconciler(sandbox, redis_client)

    async def cannot_queue(event: Event) -> bool:
        raise ConnectionError("queue away")

    failing.emitter.emit = cannot_queue  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await periodic.run_locked(failing, holder="w-9")
    [failed, _] = (await records.read_status(redis_client, 1)).passes
    assert failed.outcome == "failed"
    assert failed.holder == "w-9"
    assert failed.error == "ConnectionError: queue away"


class Held(Reconciler):
    """A pass that waits for the test before it runs."""

    def __init__(self, gate: asyncio.Event, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate

    async def run(self, *, dry_run: bool = False, holder: str | None = None) -> RunReport:
        await self.gate.wait()
        return await super().run(dry_run=dry_run, holder=holder)


async def test_the_lock_names_the_pass_holding_it(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    gate = asyncio.Event()
    held = Held(gate, redis_client, sandbox.client(), org_id=1, queue_name=QUEUE, dedupe_window=60)
    running = asyncio.create_task(periodic.run_locked(held, holder="worker-a", lock_ttl=600))

    async def locked() -> records.Status | None:
        status = await records.read_status(redis_client, 1)
        return status if status.holder is not None else None

    status = await eventually(locked, what="the pass to take the lock")
    assert status.holder == "worker-a"
    assert status.lock_left is not None
    assert 0 < status.lock_left <= 600
    with pytest.raises(periodic.Busy):
        await periodic.run_locked(reconciler(sandbox, redis_client))
    gate.set()
    await running
    assert (await records.read_status(redis_client, 1)).holder is None


async def test_a_pass_asked_for_now_runs_at_once_then_the_period_restarts(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    async def find() -> list[periodic.Target]:
        return [periodic.Target(1, None, 1)]

    def make(target: periodic.Target, calls: int | None) -> Reconciler:
        return reconciler(sandbox, redis_client)

    worker = asyncio.create_task(
        periodic.every_period(
            redis_client, find, make, period=3600, per_key=None, check_every=0.01, holder="worker-b"
        )
    )
    try:

        async def passes(count: int) -> bool:
            return (await records.read_status(redis_client, 1)).total_passes >= count

        await eventually(lambda: passes(1), what="the first period's pass")
        status = await records.read_status(redis_client, 1)
        assert status.due_in is not None
        assert status.due_in > 3000  # an hour to the next
        await records.request_run(redis_client, 1, "console: olga")
        assert (await records.read_status(redis_client, 1)).requested_by in (
            "console: olga",
            None,  # already taken
        )
        await eventually(lambda: passes(2), what="the pass asked for")
        status = await records.read_status(redis_client, 1)
        assert status.requested_by is None
        assert [p.holder for p in status.passes] == ["worker-b", "worker-b"]
        assert status.due_in is not None
        assert status.due_in > 3000
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert (await records.read_status(redis_client, 1)).total_passes == 2


async def test_the_history_and_the_events_are_bounded(redis_client: aioredis.Redis) -> None:
    for n in range(records.PASSES_KEPT + 5):
        record = records.PassRecord(started=n, duration=0.1, outcome="done", holder="w",
                                    calls=1, budget=None)  # fmt: skip
        await records.add_pass(redis_client, 7, record)
    await records.add_events(
        redis_client,
        7,
        (records.QueuedEvent(f"e{n}", "X", "users 1", n) for n in range(records.EVENTS_KEPT + 5)),
    )
    assert await redis_client.llen(records.passes_key(7)) == records.PASSES_KEPT  # type: ignore[misc]
    assert await redis_client.llen(records.events_key(7)) == records.EVENTS_KEPT  # type: ignore[misc]
    status = await records.read_status(redis_client, 7, passes=3, events=2)
    assert [p.started for p in status.passes] == [54, 53, 52]
    assert [e.id for e in status.events] == ["e204", "e203"]
