"""A real `calhooks worker` with three connections (the sandbox's Acme, Globex and Acme Labs)
and the environment's organization: each event's calls with its own key and org id, its
rules and env, its metrics label (two labels, then ``other``)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.sandbox.seed import (
    MANAGED_API_KEY,
    MANAGED_ORG_ID,
    SANDBOX_API_KEY,
    SANDBOX_ORG_ID,
    SECOND_API_KEY,
    SECOND_ORG_ID,
)
from calhooks.workers.eventlog import EventLog
from calhooks.workers.ledger import Ledger
from tests.sandbox.server import RunningSandbox
from tests.waiting import eventually
from tests.workers.processes import Process, environment, queue_event, start_worker

pytestmark = pytest.mark.slow

LIST_USERS = "cal_organizations_users_controller_get_organizations_users"
LIST_ATTRIBUTES = "cal_organizations_attributes_controller_get_organization_attributes"
RULES = f"""
env: {{domain: acme.example}}
connections:
  globex:
    env: {{domain: globex.example}}
rules:
  - name: everyone
    on: BOOKING_CREATED
    steps:
      - tool: {LIST_USERS}
        with: {{emails: ["probe@${{{{ env.domain }}}}"]}}
  - name: globex-only
    on: BOOKING_CREATED
    connections: [globex]
    steps:
      - tool: {LIST_ATTRIBUTES}
"""


def booking(uid: str) -> dict[str, object]:
    return {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2031-05-01T08:00:00.000Z",
        "payload": {"uid": uid, "startTime": "2031-05-01T09:00:00Z"},
    }


async def test_a_worker_calls_each_organization_with_its_own_key_org_and_rules(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    secret = generate_key()
    store = ConnectionStore(redis_client, SecretBox(secret))
    pcids = {}
    for name, key, org in (
        ("acme", SANDBOX_API_KEY, SANDBOX_ORG_ID),
        ("globex", SECOND_API_KEY, SECOND_ORG_ID),
        ("acme-labs", MANAGED_API_KEY, MANAGED_ORG_ID),
    ):
        added = await store.add(name, Credentials(api_key=key), org_id=org, base_url=sandbox.url)
        pcids[name] = added.pcid
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = environment(
        redis_server.url, sandbox.url, rules, encryption_key=secret, metrics_connections=2
    )
    worker = start_worker("w-orgs", env, tmp_path)
    processes.append(worker)
    queued: dict[str | None, str] = {None: await queue_event(redis_client, booking("bk-same"))}
    for name, pcid in pcids.items():  # the same booking uid in every organization
        queued[name] = await queue_event(redis_client, booking("bk-same"), connection=pcid)

    async def all_done() -> bool:
        ledger = Ledger(redis_client, ttl=60)
        states = [await ledger.load(event_id) for event_id in queued.values()]
        return all(
            state.matched is not None and all(r in state.rules for r in state.matched)
            for state in states
        )

    await eventually(all_done, what="every organization's event processed")
    calls = sorted(
        (r.credential, r.path, dict(r.query).get("emails")) for r in sandbox.requests(LIST_USERS)
    )
    assert calls == [
        ("key-acme-admin", "/v2/organizations/1/users", "probe@acme.example"),
        ("key-acme-admin", "/v2/organizations/1/users", "probe@acme.example"),
        ("key-acme-labs", "/v2/organizations/3/users", "probe@acme.example"),
        ("key-globex-admin", "/v2/organizations/2/users", "probe@globex.example"),
    ]
    assert [(r.credential, r.path) for r in sandbox.requests(LIST_ATTRIBUTES)] == [
        ("key-globex-admin", "/v2/organizations/2/attributes")
    ]
    for organization, event_id in queued.items():
        state = await Ledger(redis_client, ttl=60).load(event_id)
        globex = organization == "globex"
        expected = {"everyone": "done", **({"globex-only": "done"} if globex else {})}
        assert state.rules == expected, organization
        attempt = (await EventLog(redis_client, ttl=60).read(event_id))[0]
        assert attempt.get("connection_name") == organization
    text = worker.get("/metrics").text
    labels = set(re.findall(r'calhooks_worker_events_total\{connection="([^"]+)"', text))
    assert "env" in labels
    assert "other" in labels
    assert len(labels - {"env", "other"}) == 2
    assert labels - {"env", "other"} <= set(pcids)
    # No key in the worker's log, though it decrypted three.
    output = worker.output()
    for key in (SECOND_API_KEY, MANAGED_API_KEY):
        assert key not in output
    assert str(uuid.UUID(pcids["globex"])) in output  # the connection is named in the log
