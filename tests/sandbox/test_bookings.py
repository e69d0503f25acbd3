"""Bookings as sandbox state: each change through the admin surface sends what Cal.com
sends (trigger, status, linked uids), and the organization bookings endpoint lists them."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from calhooks.service.calcom.tools import INTERNAL, ORG_BOOKINGS, TOOLS
from calhooks.service.sandbox import SECOND_API_KEY, SECOND_ORG_ID
from tests.sandbox.server import RunningSandbox

CREATE_WEBHOOK = "cal_organizations_webhooks_controller_create_organization_webhook"


async def change(sandbox: RunningSandbox, path: str, **body: Any) -> dict[str, Any]:
    response = await sandbox.admin("POST", path, json=body)
    assert response.status_code in (200, 202), response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_created_rescheduled_twice_then_cancelled(sandbox: RunningSandbox) -> None:
    made = await change(
        sandbox,
        "/bookings",
        change="create",
        user="alice",
        eventType="time-off",
        start="2026-03-02T09:00:00Z",
        end="2026-03-04T17:00:00Z",
    )
    first = made["booking"]["uid"]
    assert made["trigger"] == "BOOKING_CREATED"
    assert made["body"]["payload"]["status"] == "ACCEPTED"
    assert made["body"]["payload"]["uid"] == first
    assert made["body"]["payload"]["type"] == "time-off"
    assert made["body"]["payload"]["startTime"] == "2026-03-02T09:00:00Z"

    moved = await change(
        sandbox,
        f"/bookings/{first}/reschedule",
        start="2026-03-09T09:00:00Z",
        end="2026-03-10T17:00:00Z",
    )
    second = moved["booking"]["uid"]
    payload = moved["body"]["payload"]
    assert moved["trigger"] == "BOOKING_RESCHEDULED"
    assert second != first
    assert payload["rescheduleUid"] == first
    assert payload["rescheduleId"] == made["booking"]["id"]
    assert payload["rescheduleStartTime"] == "2026-03-02T09:00:00Z"
    assert (payload["status"], payload["uid"]) == ("ACCEPTED", second)
    assert moved["booking"]["rescheduledFrom"] == first
    assert sandbox.store.bookings[first].status == "CANCELLED"
    assert sandbox.store.bookings[first].rescheduled_to == second

    again = await change(sandbox, f"/bookings/{second}/reschedule")
    third = again["booking"]["uid"]
    assert again["body"]["payload"]["rescheduleUid"] == second
    assert again["booking"]["start"] == "2026-03-10T09:00:00.000Z"  # one day later by default

    listed = (await sandbox.admin("GET", "/bookings", params={"orgId": 1})).json()["bookings"]
    assert [(b["uid"], b["status"], b["rescheduledFrom"]) for b in listed] == [
        (first, "CANCELLED", None),
        (second, "CANCELLED", first),
        (third, "ACCEPTED", second),
    ]
    assert listed[0]["rescheduledTo"] == second
    assert (await sandbox.admin("GET", "/bookings", params={"orgId": 2})).json()["bookings"] == []
    assert sandbox.sandbox.snapshot()["counts"]["bookings"] == 3

    gone = await change(sandbox, f"/bookings/{third}/cancel", reason="plans changed")
    assert gone["trigger"] == "BOOKING_CANCELLED"
    assert gone["body"]["payload"]["status"] == "CANCELLED"
    assert gone["body"]["payload"]["cancellationReason"] == "plans changed"
    assert gone["body"]["payload"]["uid"] == third
    assert [b.status for b in sandbox.store.bookings.values()] == ["CANCELLED"] * 3


async def test_request_then_accept_or_reject(sandbox: RunningSandbox) -> None:
    asked = await change(sandbox, "/bookings", change="request", user="alice", eventType="time-off")
    uid = asked["booking"]["uid"]
    assert asked["trigger"] == "BOOKING_REQUESTED"
    assert asked["body"]["payload"]["status"] == "PENDING"
    assert asked["body"]["payload"]["requiresConfirmation"] is True
    accepted = await change(sandbox, f"/bookings/{uid}/accept")
    assert accepted["trigger"] == "BOOKING_CREATED"
    assert (accepted["body"]["payload"]["uid"], accepted["body"]["payload"]["status"]) == (
        uid,
        "ACCEPTED",
    )

    other = (await change(sandbox, "/bookings", change="request", user="alice"))["booking"]["uid"]
    refused = await change(sandbox, f"/bookings/{other}/reject", reason="no cover")
    assert refused["trigger"] == "BOOKING_REJECTED"
    assert refused["body"]["triggerEvent"] == "BOOKING_REJECTED"
    assert refused["body"]["payload"]["status"] == "REJECTED"
    assert refused["body"]["payload"]["rejectionReason"] == "no cover"
    assert "cancellationReason" not in refused["body"]["payload"]


async def test_reschedule_sent_as_a_request(sandbox: RunningSandbox) -> None:
    """Cal.com issue 21169: the v2 reschedule sends BOOKING_REQUESTED with the reschedule fields."""
    uid = (await change(sandbox, "/bookings", change="create", user="alice"))["booking"]["uid"]
    moved = await change(sandbox, f"/bookings/{uid}/reschedule", asRequest=True)
    assert moved["trigger"] == "BOOKING_REQUESTED"
    assert moved["body"]["payload"]["rescheduleUid"] == uid
    assert moved["body"]["payload"]["status"] == "PENDING"
    assert moved["booking"]["status"] == "PENDING"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/bookings/nope/cancel", {}, 404, "uid=nope was not found"),
        ("/bookings/{uid}/accept", {}, 400, "cannot accept booking"),
        ("/bookings/{uid}/frobnicate", {}, 404, "no booking change 'frobnicate'"),
        ("/bookings", {"change": "cancel"}, 400, "change must be create or request"),
        ("/bookings", {"change": "create", "start": "tomorrow"}, 400, "not an ISO-8601"),
        ("/bookings", {"change": "create", "start": "2026-03-02T09:00:00"}, 400, "time zone"),
        ("/bookings", {"change": "create", "colour": "red"}, 400, "invalid request"),
    ],
)
async def test_bad_changes_are_refused(
    sandbox: RunningSandbox, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    uid = (await change(sandbox, "/bookings", change="create", user="alice"))["booking"]["uid"]
    response = await sandbox.admin("POST", path.format(uid=uid), json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


async def test_a_cancelled_booking_cannot_be_rescheduled(sandbox: RunningSandbox) -> None:
    uid = (await change(sandbox, "/bookings", change="create", user="alice"))["booking"]["uid"]
    moved = (await change(sandbox, f"/bookings/{uid}/reschedule"))["booking"]["uid"]
    response = await sandbox.admin("POST", f"/bookings/{uid}/reschedule", json={})
    assert response.status_code == 400
    assert f"rescheduled to {moved}" in response.json()["error"]


async def test_changes_are_delivered_to_subscribers(sandbox: RunningSandbox) -> None:
    async with sandbox.client() as cal:
        await cal.call(
            CREATE_WEBHOOK,
            subscriberUrl="http://127.0.0.1:9/closed",
            triggers=["BOOKING_CREATED", "BOOKING_RESCHEDULED", "BOOKING_CANCELLED"],
            active=True,
        )
    uid = (await change(sandbox, "/bookings", change="create", user="alice"))["booking"]["uid"]
    moved = await change(sandbox, f"/bookings/{uid}/reschedule", wait=True)
    assert len(moved["webhooks"]) == 1
    assert [d["trigger"] for d in moved["deliveries"]] == ["BOOKING_RESCHEDULED"]


def test_bookings_are_internal_not_a_tool() -> None:
    assert ORG_BOOKINGS in INTERNAL
    assert ORG_BOOKINGS not in TOOLS
    assert len(TOOLS) == 37
    assert INTERNAL[ORG_BOOKINGS].read_only


async def test_the_bookings_endpoint_lists_the_organization_bookings(
    sandbox: RunningSandbox,
) -> None:
    uid = (await change(sandbox, "/bookings", change="create", user="alice"))["booking"]["uid"]
    moved = (await change(sandbox, f"/bookings/{uid}/reschedule"))["booking"]["uid"]
    asked = (await change(sandbox, "/bookings", change="request", user="bob"))["booking"]["uid"]
    async with sandbox.client() as cal:
        answer = await cal.request(ORG_BOOKINGS, {})
        cancelled = await cal.call(ORG_BOOKINGS, status=["cancelled"])
        one = await cal.call(ORG_BOOKINGS, bookingUid=moved)
        paged = [b["uid"] async for b in cal.paginate(ORG_BOOKINGS, page_size=1)]
    schema = INTERNAL[ORG_BOOKINGS].response_schema
    assert schema is not None
    envelope = {"status": "success", "data": answer.data, "pagination": answer.pagination}
    jsonschema.validate(envelope, schema)
    by_uid = {b["uid"]: b for b in answer.data}
    assert set(by_uid) == {uid, moved, asked}
    assert by_uid[uid]["status"] == "cancelled"
    assert by_uid[uid]["rescheduledToUid"] == moved
    assert by_uid[moved]["rescheduledFromUid"] == uid
    assert by_uid[asked]["status"] == "pending"
    assert by_uid[moved]["eventType"]["slug"] == "30min"
    assert [b["uid"] for b in cancelled] == [uid]
    assert [b["uid"] for b in one] == [moved]
    assert sorted(paged) == sorted(by_uid)
    async with sandbox.client(api_key=SECOND_API_KEY, org_id=SECOND_ORG_ID) as other:
        assert await other.call(ORG_BOOKINGS) == []
