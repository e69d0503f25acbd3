"""Bookings' lifecycles end to end over real processes: the sandbox changes a booking and
delivers what Cal.com sends, `calhooks serve` queues it, two `calhooks worker`s run the
example rules - and the sandbox ends with exactly one OOO entry per live time-off booking,
on its current dates, made once (docs/bookings.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.webhooks import SIGNATURE_HEADER, compact_json, sign
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.events import event_id
from calhooks.workers.eventlog import EventLog
from tests import waiting
from tests.sandbox.server import RunningSandbox
from tests.workers.processes import Process, environment, start_intake, start_worker

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rules.yaml"
SECRET = "whsec_bookings_e2e"
TRIGGERS = [
    "BOOKING_CREATED",
    "BOOKING_REQUESTED",
    "BOOKING_RESCHEDULED",
    "BOOKING_CANCELLED",
    "BOOKING_REJECTED",
]
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
UPDATE_OOO = "cal_organizations_users_ooocontroller_update_organization_user_ooo"
DELETE_OOO = "cal_organizations_users_ooocontroller_delete_organization_user_ooo"
ALICE, BOB, CAROL = 101, 102, 103
#: How long an event waits for its chain's earlier events (CALHOOKS_WORKER_ORDERING_WAIT).
ORDERING_WAIT = 5


async def eventually(check: Callable[[], Any], within: float = 40.0, what: str = "") -> Any:
    """``tests.waiting.eventually`` with a longer deadline: a chain may wait its turn."""
    return await waiting.eventually(check, within=within, what=what)


@dataclass
class Stack:
    sandbox: RunningSandbox
    redis: aioredis.Redis
    intake: Process

    async def change(self, path: str, **body: Any) -> dict[str, Any]:
        """A booking change in the sandbox, delivered (to the intake when subscribed)."""
        response = await self.sandbox.admin("POST", path, json={"wait": True, **body})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        for delivery in answer.get("deliveries", []):
            assert delivery["status"] == 202, delivery
        return answer

    async def deliver(self, answer: dict[str, Any]) -> str:
        """POST a change's body to the intake ourselves, signed as Cal.com signs it."""
        raw = compact_json(answer["body"]).encode()
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{self.intake.url}/webhooks/cal",
                content=raw,
                headers={
                    "content-type": "application/json",
                    SIGNATURE_HEADER: sign(raw, SECRET.encode()),
                },
            )
        assert response.status_code == 202, response.text
        return event_id(raw)

    async def done(self, *event_ids: str) -> bool:
        """Every one of the events has been processed, or skipped, to the end."""
        for one in event_ids:
            kinds = {r["kind"] for r in await self.log(one)}
            if not kinds & {"done", "skipped"}:
                return False
        return True

    async def settle(self, *answers: dict[str, Any]) -> None:
        """Wait until the events the changes delivered have all been processed."""
        ids = [event_id(d["raw"].encode()) for a in answers for d in a.get("deliveries", [])]
        assert len(ids) == len(answers)
        await eventually(lambda: self.done(*ids), what=f"events {ids} to be processed")

    def entries(self, user_id: int) -> list[Any]:
        return [
            e
            for e in self.sandbox.store.ooo.values()
            if e.user_id == user_id and "Time off (booking" in (e.notes or "")
        ]

    def calls(self, tool: str, user_id: int) -> int:
        return sum(
            1
            for r in self.sandbox.requests(tool)
            if r.status is not None and r.status < 300 and f"/users/{user_id}/" in r.path
        )

    async def log(self, one: str) -> list[dict[str, Any]]:
        return await EventLog(self.redis, ttl=60).read(one)


async def start_stack(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
    *,
    subscribed: bool = True,
) -> Stack:
    env = environment(
        redis_server.url,
        sandbox.url,
        EXAMPLES,
        webhook_secrets=SECRET,
        worker_ordering_wait=ORDERING_WAIT,
    )
    for name in ("w1", "w2"):
        processes.append(start_worker(name, env, tmp_path))
    intake = start_intake(env, tmp_path)
    processes.append(intake)
    if subscribed:
        async with sandbox.client() as cal:
            await cal.call(
                "cal_organizations_webhooks_controller_create_organization_webhook",
                active=True,
                subscriberUrl=f"{intake.url}/webhooks/cal",
                triggers=TRIGGERS,
                secret=SECRET,
            )
    return Stack(sandbox, redis, intake)


@pytest.fixture
async def stack(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> Stack:
    return await start_stack(sandbox, redis_server, redis_client, tmp_path, processes)


def days(entry: Any) -> tuple[str, str]:
    start: datetime = entry.start
    end: datetime = entry.end
    return start.date().isoformat(), end.date().isoformat()


async def test_created_rescheduled_twice_then_cancelled(stack: Stack) -> None:
    """One entry follows the booking through two reschedules (updated, not re-created),
    then goes with the cancellation of the latest uid."""
    made = await stack.change(
        "/bookings",
        change="create",
        user="alice",
        eventType="time-off",
        start="2031-04-07T09:00:00Z",
        end="2031-04-09T17:00:00Z",
    )
    first = made["booking"]["uid"]
    # Both reschedules follow at once: the chain keeps them in order behind the creation.
    second = await stack.change(
        f"/bookings/{first}/reschedule", start="2031-04-14T09:00:00Z", end="2031-04-16T17:00:00Z"
    )
    third = await stack.change(
        f"/bookings/{second['booking']['uid']}/reschedule",
        start="2031-04-21T09:00:00Z",
        end="2031-04-22T17:00:00Z",
    )
    await stack.settle(made, second, third)
    [entry] = stack.entries(ALICE)
    assert entry.notes == f"Time off (booking {third['booking']['uid']})"
    assert days(entry) == ("2031-04-21", "2031-04-22")
    assert (stack.calls(CREATE_OOO, ALICE), stack.calls(UPDATE_OOO, ALICE)) == (1, 2)
    log = await stack.log(event_id(third["deliveries"][0]["raw"].encode()))
    booking = next(r for r in log if r["kind"] == "booking")
    assert (booking["uid"], booking["replaces"], booking["chain"]) == (
        third["booking"]["uid"],
        second["booking"]["uid"],
        first,
    )

    cancelled = await stack.change(f"/bookings/{third['booking']['uid']}/cancel")
    await stack.settle(cancelled)
    assert stack.entries(ALICE) == []
    assert stack.calls(DELETE_OOO, ALICE) == 1
    assert stack.calls(CREATE_OOO, ALICE) == 1


async def test_requests_accepted_rejected_and_cancelled(stack: Stack) -> None:
    """A request makes no entry; its acceptance does (once); a refused or cancelled request
    leaves none."""
    asked = await stack.change("/bookings", change="request", user="alice", eventType="time-off")
    await stack.settle(asked)
    assert stack.entries(ALICE) == []
    accepted = await stack.change(f"/bookings/{asked['booking']['uid']}/accept")
    await stack.settle(accepted)
    [entry] = stack.entries(ALICE)
    assert entry.notes == f"Time off (booking {asked['booking']['uid']})"

    refused = await stack.change("/bookings", change="request", user="bob", eventType="time-off")
    rejected = await stack.change(f"/bookings/{refused['booking']['uid']}/reject")
    dropped = await stack.change("/bookings", change="request", user="carol", eventType="time-off")
    withdrawn = await stack.change(f"/bookings/{dropped['booking']['uid']}/cancel")
    await stack.settle(refused, rejected, dropped, withdrawn)
    assert stack.entries(BOB) == stack.entries(CAROL) == []
    assert stack.calls(CREATE_OOO, BOB) == stack.calls(CREATE_OOO, CAROL) == 0
    assert len(stack.entries(ALICE)) == 1
    assert stack.calls(CREATE_OOO, ALICE) == 1


async def test_a_reschedule_sent_as_a_request(stack: Stack) -> None:
    """Cal.com issue 21169: the reschedule arrives as BOOKING_REQUESTED with rescheduleUid.
    The entry moves to the new uid; accepting keeps it, refusing removes it."""
    made = await stack.change(
        "/bookings",
        change="create",
        user="alice",
        eventType="time-off",
        start="2031-06-02T09:00:00Z",
        end="2031-06-03T17:00:00Z",
    )
    moved = await stack.change(
        f"/bookings/{made['booking']['uid']}/reschedule",
        asRequest=True,
        start="2031-06-09T09:00:00Z",
        end="2031-06-10T17:00:00Z",
    )
    assert moved["trigger"] == "BOOKING_REQUESTED"
    accepted = await stack.change(f"/bookings/{moved['booking']['uid']}/accept")
    await stack.settle(made, moved, accepted)
    [entry] = stack.entries(ALICE)
    assert entry.notes == f"Time off (booking {moved['booking']['uid']})"
    assert days(entry) == ("2031-06-09", "2031-06-10")
    assert stack.calls(CREATE_OOO, ALICE) == 1

    other = await stack.change("/bookings", change="create", user="bob", eventType="time-off")
    asked = await stack.change(f"/bookings/{other['booking']['uid']}/reschedule", asRequest=True)
    refused = await stack.change(f"/bookings/{asked['booking']['uid']}/reject")
    await stack.settle(other, asked, refused)
    assert stack.entries(BOB) == []
    assert (stack.calls(CREATE_OOO, BOB), stack.calls(DELETE_OOO, BOB)) == (1, 1)


async def test_two_workers_and_a_chain_delivered_out_of_order(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """Each chain's events reach the intake newest first; two workers still end each
    booking right: alice's twice-moved booking has one entry on its last dates; bob's
    booking, moved then cancelled, has none; carol's reschedule that ran before its
    original's creation (which came after the ordering wait) leaves the late creation
    recognised and skipped."""
    stack = await start_stack(
        sandbox, redis_server, redis_client, tmp_path, processes, subscribed=False
    )
    a1 = await stack.change("/bookings", change="create", user="alice", eventType="time-off")
    a2 = await stack.change(
        f"/bookings/{a1['booking']['uid']}/reschedule", start="2031-08-04T09:00:00Z"
    )
    a3 = await stack.change(
        f"/bookings/{a2['booking']['uid']}/reschedule",
        start="2031-08-11T09:00:00Z",
        end="2031-08-12T17:00:00Z",
    )
    b1 = await stack.change("/bookings", change="create", user="bob", eventType="time-off")
    b2 = await stack.change(f"/bookings/{b1['booking']['uid']}/reschedule")
    b3 = await stack.change(f"/bookings/{b2['booking']['uid']}/cancel")
    ids = [await stack.deliver(answer) for answer in (a3, b3, a2, b2, a1, b1)]
    await eventually(lambda: stack.done(*ids), what="both chains to be processed")
    [entry] = stack.entries(ALICE)
    assert entry.notes == f"Time off (booking {a3['booking']['uid']})"
    assert days(entry) == ("2031-08-11", "2031-08-12")
    assert (stack.calls(CREATE_OOO, ALICE), stack.calls(UPDATE_OOO, ALICE)) == (1, 2)
    assert stack.entries(BOB) == []
    assert (stack.calls(CREATE_OOO, BOB), stack.calls(DELETE_OOO, BOB)) == (1, 1)
    # The newest reschedule, first in the queue, waited for the one it replaced.
    reasons = [r.get("reason", "") for r in await stack.log(ids[0]) if r["kind"] == "deferred"]
    assert any("creation of the booking it replaces" in reason for reason in reasons)

    c1 = await stack.change("/bookings", change="create", user="carol", eventType="time-off")
    c2 = await stack.change(f"/bookings/{c1['booking']['uid']}/reschedule")
    moved = await stack.deliver(c2)
    await eventually(lambda: stack.done(moved), what="the reschedule, past the ordering wait")
    late = await stack.deliver(c1)
    await eventually(lambda: stack.done(late), what="the original's late creation")
    [entry] = stack.entries(CAROL)
    assert entry.notes == f"Time off (booking {c2['booking']['uid']})"
    assert stack.calls(CREATE_OOO, CAROL) == 1
    skipped = next(r for r in await stack.log(late) if r["kind"] == "skipped")
    assert skipped["reason"] == (
        f"booking {c1['booking']['uid']} was already rescheduled to {c2['booking']['uid']}"
    )
