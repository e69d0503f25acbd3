"""Finders look an interrupted create's entity up in Cal.com (the sandbox) by its identity."""

from __future__ import annotations

from typing import Any

import pytest

from calhooks.service.sandbox import DEPARTMENT_ATTRIBUTE_ID
from calhooks.workers import finders
from tests.sandbox.server import RunningSandbox

BOB = 102
HOOK = "https://hooks.example/calhooks"


async def test_an_ooo_entry_is_found_by_its_days_notes_and_reason(sandbox: RunningSandbox) -> None:
    """Cal.com stores whole days, so the entry matches on the UTC day of start and end."""
    params: dict[str, Any] = {
        "userId": BOB,
        "start": "2031-03-02T09:30:00Z",
        "end": "2031-03-04T17:00:00Z",
        "notes": "booking abc",
        "reason": "vacation",
    }
    async with sandbox.client() as cal:
        assert await finders.find_ooo(cal, params) is None
        created = await cal.call(finders.CREATE_OOO, **params)
        found = await finders.find_ooo(cal, params)
        assert found is not None
        assert found["id"] == created["id"]
        assert await finders.find_ooo(cal, {**params, "notes": "booking xyz"}) is None
        assert await finders.find_ooo(cal, {**params, "end": "2031-03-05T17:00:00Z"}) is None
        assert await finders.find_ooo(cal, {**params, "reason": "sick"}) is None


async def test_a_webhook_is_found_by_url_and_trigger_set(sandbox: RunningSandbox) -> None:
    """The same subscriber URL with the same triggers, in any order, is the same webhook."""
    params = {
        "active": True,
        "subscriberUrl": HOOK,
        "triggers": ["BOOKING_CREATED", "MEETING_ENDED"],
    }
    async with sandbox.client() as cal:
        created = await cal.call(finders.CREATE_WEBHOOK, **params)
        reordered = {**params, "triggers": ["MEETING_ENDED", "BOOKING_CREATED"]}
        found = await finders.find_webhook(cal, reordered)
        assert found is not None
        assert found["id"] == created["id"]
        assert await finders.find_webhook(cal, {**params, "triggers": ["BOOKING_CREATED"]}) is None


@pytest.mark.parametrize(
    ("finder", "tool", "params", "other"),
    [
        (
            finders.find_attribute,
            finders.CREATE_ATTRIBUTE,
            {"name": "Region", "slug": "region", "type": "TEXT", "options": []},
            {"name": "Region", "slug": "zone", "type": "TEXT", "options": []},
        ),
        (
            finders.find_attribute_option,
            finders.CREATE_OPTION,
            {"attributeId": DEPARTMENT_ATTRIBUTE_ID, "value": "Legal", "slug": "legal"},
            {"attributeId": DEPARTMENT_ATTRIBUTE_ID, "value": "Legal", "slug": "law"},
        ),
        (
            finders.find_user,
            finders.CREATE_USER,
            {"email": "Zed@Acme.example"},
            {"email": "nobody@acme.example"},
        ),
    ],
    ids=["attribute", "option", "user"],
)
async def test_created_entities_are_found_by_their_identity(
    sandbox: RunningSandbox,
    finder: finders.Finder,
    tool: str,
    params: dict[str, Any],
    other: dict[str, Any],
) -> None:
    """What was created is found again; something else with the same shape is not."""
    async with sandbox.client() as cal:
        created = await cal.call(tool, **params)
        found = await finder(cal, params)
        assert found is not None
        assert found["id"] == created["id"]
        assert await finder(cal, other) is None


async def test_a_membership_is_found_by_user(sandbox: RunningSandbox) -> None:
    """Bob is a member of Acme; a user id with no membership finds nothing."""
    async with sandbox.client() as cal:
        found = await finders.find_membership(cal, {"userId": BOB, "role": "MEMBER"})
        assert found is not None
        assert found["userId"] == BOB
        assert await finders.find_membership(cal, {"userId": 999_999}) is None


async def test_a_managed_organization_is_found_by_slug(sandbox: RunningSandbox) -> None:
    """A managed organization created under Acme is found by its slug."""
    async with sandbox.client() as cal:
        created = await cal.call(
            finders.CREATE_MANAGED_ORG, name="Acme Ventures", slug="acme-ventures"
        )
        found = await finders.find_managed_org(
            cal, {"name": "Acme Ventures", "slug": "acme-ventures"}
        )
        assert found is not None
        assert found["id"] == created["id"]
        assert await finders.find_managed_org(cal, {"name": "X", "slug": "acme-nothing"}) is None


def test_every_finder_belongs_to_a_create_tool() -> None:
    """Finders are keyed by POST tools of the registry."""
    from calhooks.service.calcom import get_tool

    assert {get_tool(name).method for name in finders.FINDERS} == {"POST"}
