"""Numbered organizations: many orgs, each with its own API key, admin and rate limit."""

from __future__ import annotations

import httpx

from calhooks.service.sandbox import (
    SECOND_ORG_ID,
    Sandbox,
    organization_api_key,
    organization_key_id,
)
from tests.sandbox.server import RunningSandbox

USERS = "cal_organizations_users_controller_get_organizations_users"


def test_seeded_numbered_organizations_survive_a_reset() -> None:
    """``organizations=N`` adds N orgs after the seeded three; a reset brings them back."""
    sandbox = Sandbox(organizations=2)
    numbered = sorted(o for o in sandbox.store.orgs if o > SECOND_ORG_ID + 1)
    assert len(numbered) == 2
    for org_id in numbered:
        org = sandbox.store.orgs[org_id]
        assert (org.name, org.slug) == (f"Org {org_id}", f"org-{org_id}")
        key = sandbox.store.api_keys[organization_api_key(org_id)]
        assert (key.id, key.org_id) == (organization_key_id(org_id), org_id)
        admin = sandbox.store.users[key.user_id or 0]
        assert (admin.org_id, admin.username) == (org_id, f"org{org_id}-admin")
    sandbox.reset()
    assert sorted(o for o in sandbox.store.orgs if o > SECOND_ORG_ID + 1) == numbered
    empty = Sandbox(seeded=False, organizations=1)
    assert [k.user_id for k in empty.store.api_keys.values() if k.id.startswith("key-org")] == [
        None
    ]


async def test_added_organizations_have_keys_and_limits_of_their_own(
    sandbox: RunningSandbox,
) -> None:
    """``POST /_sandbox/organizations`` answers ids, not keys; each key sees its own org only
    and is throttled on its own (the request log names its credential)."""
    await sandbox.admin("PUT", "/rate-limit", json={"limit": 3, "window": 60})
    answer = await sandbox.admin("POST", "/organizations", json={"count": 2})
    assert answer.status_code == 201
    added = answer.json()["organizations"]
    assert [o["apiKeyId"] for o in added] == [organization_key_id(o["id"]) for o in added]
    assert all(o["admin"] == f"org{o['id']}-admin" for o in added)
    assert "cal_test" not in answer.text
    first, second = (o["id"] for o in added)
    statuses: dict[int, list[int]] = {}
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        for org_id in (first, second):
            auth = {"Authorization": f"Bearer {organization_api_key(org_id)}"}
            paths = [
                f"/v2/organizations/{n}/users" for n in (SECOND_ORG_ID, org_id, org_id, org_id)
            ]
            statuses[org_id] = [(await http.get(path, headers=auth)).status_code for path in paths]
    assert statuses == {first: [403, 200, 200, 429], second: [403, 200, 200, 429]}
    used = {r.credential for r in sandbox.requests(USERS) if r.status == 200}
    assert used == {organization_key_id(first), organization_key_id(second)}
    users = (await sandbox.admin("GET", "/state")).json()["users"]
    assert {u["username"] for u in users if u["orgId"] == first} == {f"org{first}-admin"}


async def test_an_emitted_event_of_a_numbered_organization(sandbox: RunningSandbox) -> None:
    """Its admin books like any sandbox user: events can be emitted for the new org."""
    org_id = (await sandbox.admin("POST", "/organizations", json={"count": 1})).json()[
        "organizations"
    ][0]["id"]
    emitted = await sandbox.admin(
        "POST", "/events", json={"trigger": "BOOKING_CREATED", "orgId": org_id}
    )
    assert emitted.status_code == 202, emitted.text
    organizer = emitted.json()["body"]["payload"]["organizer"]
    assert organizer["username"] == f"org{org_id}-admin"


async def test_bad_counts_are_refused(sandbox: RunningSandbox) -> None:
    for body in ({"count": 0}, {"count": 10_001}, {"count": "x"}, {}, {"count": 1, "n": 2}):
        answer = await sandbox.admin("POST", "/organizations", json=body)
        assert answer.status_code == 400, body
        assert answer.json()["error"] == "invalid request"
