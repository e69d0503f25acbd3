"""Reconciliation over real processes: the sandbox, `calhooks serve` and `calhooks worker`s
with a 1-second reconciliation period. A time-off booking whose deliveries never arrive
still gets its OOO entry, exactly once, and loses it when cancelled; a delivered booking is
not recovered a second time; a rule on ``event.source == "reconcile"`` runs for the
recovered booking only; calhooks' own webhook, edited in Cal.com, is re-applied by the web
process (docs/reconciliation.md); a connection's organization is reconciled with its own key
and records."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.events import reapply_key
from calhooks.service.sandbox import SANDBOX_ORG_ID
from calhooks.service.sandbox.seed import SECOND_API_KEY, SECOND_ORG_ID
from calhooks.workers.eventlog import EventLog
from calhooks.workers.reconcile import records, triggers
from calhooks.workers.redistyped import hget
from tests.sandbox.server import RunningSandbox
from tests.workers.processes import Process, environment, start, start_intake, start_worker
from tests.workers.test_bookings_e2e import (
    ALICE,
    BOB,
    CREATE_OOO,
    DELETE_OOO,
    EXAMPLES,
    SECRET,
    UPDATE_OOO,
    Stack,
    eventually,
)

pytestmark = pytest.mark.slow

STATE = f"calhooks:reconcile:{SANDBOX_ORG_ID}:state"
RECOVERED_RULE = """
  - name: note-recovered
    on: [BOOKING_CREATED]
    when: event.source == "reconcile"
    steps:
      - log: "recovered ${{ payload.uid }}"
"""
LOCK = f"calhooks:reconcile:{SANDBOX_ORG_ID}:lock"


def log_lines(process: Process) -> list[dict[str, Any]]:
    """A process' JSON log lines."""
    lines = []
    for line in process.output().splitlines():
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                lines.append(parsed)
    return lines


async def passes(redis: aioredis.Redis) -> int:
    return int(await hget(redis, STATE, "passes") or 0)


async def more_passes(redis: aioredis.Redis, count: int) -> None:
    """Wait until the workers have made ``count`` more complete passes."""
    start = await passes(redis)

    async def enough() -> bool:
        return await passes(redis) >= start + count

    await eventually(enough, what=f"{count} more reconciliation passes")


async def test_lost_deliveries_are_recovered_once_and_delivered_ones_not_again(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    # The example rules, and one for recovered bookings only.
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(EXAMPLES.read_text() + RECOVERED_RULE)
    env = environment(
        redis_server.url,
        sandbox.url,
        rules_file,
        webhook_secrets=SECRET,
        worker_ordering_wait=5,
        reconcile_period=1,
        reconcile_grace=0,
        # 10 list calls per 1-second pass: every pass lists everything (5 kinds, a page each).
        worker_rate_limit_per_minute=1200,
        reconcile_rate_share=0.5,
    )
    for name in ("w1", "w2"):
        processes.append(start_worker(name, env, tmp_path))
    intake = start_intake(env, tmp_path)
    processes.append(intake)
    # No webhook is subscribed: every change is lost unless the test delivers it itself.
    stack = Stack(sandbox, redis_client, intake)
    await more_passes(redis_client, 1)
    assert await hget(redis_client, STATE, "bookings:baseline") == b"1"

    # Bob's booking is delivered and processed while no pass can run (the test holds the
    # lock), so a pass never races its delivery.
    assert await redis_client.set(LOCK, "test", nx=True, px=60_000)
    bobs = await stack.change(
        "/bookings", change="create", user="bob", eventType="time-off", orgId=SANDBOX_ORG_ID
    )
    delivered = await stack.deliver(bobs)
    await eventually(lambda: stack.done(delivered), what="bob's delivered booking")
    assert len(stack.entries(BOB)) == 1
    await redis_client.delete(LOCK)

    # Alice's booking is never delivered.
    alices = await stack.change(
        "/bookings", change="create", user="alice", eventType="time-off", orgId=SANDBOX_ORG_ID
    )
    assert alices.get("deliveries", []) == []
    await eventually(lambda: len(stack.entries(ALICE)) == 1, what="alice's recovered entry")
    [entry] = stack.entries(ALICE)
    assert alices["booking"]["uid"] in (entry.notes or "")
    await more_passes(redis_client, 3)
    assert len(stack.entries(ALICE)) == 1
    assert stack.calls(CREATE_OOO, ALICE) == 1
    assert stack.calls(UPDATE_OOO, ALICE) == 0
    assert len(stack.entries(BOB)) == 1
    assert stack.calls(CREATE_OOO, BOB) == 1
    assert stack.calls(UPDATE_OOO, BOB) == 0  # not recovered: no second run of the rule

    # event.source tells them apart: the rule on it ran for alice's recovered booking only.
    status = await records.read_status(redis_client, SANDBOX_ORG_ID)
    [recovered] = [e for e in status.events if e.subject == f"booking {alices['booking']['uid']}"]
    assert recovered.trigger == "BOOKING_CREATED"
    await eventually(lambda: stack.done(recovered.id), what="the recovered event")
    matched = [r for r in await stack.log(recovered.id) if r["kind"] == "matched"]
    assert "note-recovered" in matched[-1]["rules"]
    assert "time-off-creates-ooo" in matched[-1]["rules"]
    matched = [r for r in await stack.log(delivered) if r["kind"] == "matched"]
    assert "time-off-creates-ooo" in matched[-1]["rules"]
    assert "note-recovered" not in matched[-1]["rules"]

    # Its cancellation is lost too, and still removes the entry.
    await stack.change(
        f"/bookings/{alices['booking']['uid']}/cancel", orgId=SANDBOX_ORG_ID, reason="no"
    )
    await eventually(lambda: stack.entries(ALICE) == [], what="alice's entry to go")
    await more_passes(redis_client, 2)
    assert stack.calls(DELETE_OOO, ALICE) == 1
    assert stack.calls(CREATE_OOO, ALICE) == 1


async def test_someone_editing_the_own_webhook_gets_it_re_applied(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """Someone deactivates calhooks' own webhook in Cal.com; a worker's pass emits
    ``calhooks.WEBHOOK_CHANGED`` and asks for a re-apply; `calhooks serve` (auto-apply) takes
    the request and restores the webhook (docs/reconciliation.md, "Re-applying")."""
    # A pass a second spends ~7 calls: Cal.com's limit is raised to the workers' own, so the
    # web process' calls (on the same key) are not throttled by them.
    answer = await sandbox.admin("PUT", "/rate-limit", json={"limit": 1200})
    assert answer.status_code == 200, answer.text
    port = free_port()
    env = environment(
        redis_server.url,
        sandbox.url,
        EXAMPLES,
        webhook_secrets=SECRET,
        reconcile_period=1,
        reconcile_grace=0,
        worker_rate_limit_per_minute=1200,
        reconcile_rate_share=0.5,
        public_url=f"http://127.0.0.1:{port}",
        webhook_deployment="e2e",
        webhooks_auto_apply="true",
        encryption_key=generate_key(),
    )
    processes.append(start_worker("w1", env, tmp_path))
    intake_env = {**env, "CALHOOKS_SPOOL_DIR": str(tmp_path / "spool")}
    intake = start("intake", ["serve", "--port", str(port)], intake_env, tmp_path, port)
    processes.append(intake)
    intake.wait_ready()

    # The web process applies the plan at start: calhooks' own webhook, marked as e2e's.
    def own() -> Any:
        found = [w for w in sandbox.store.webhooks.values() if "calhooks=e2e" in w.subscriber_url]
        return found[0] if len(found) == 1 and found[0].active else None

    webhook = await eventually(own, what="the web process to apply its webhook")
    assert webhook.subscriber_url.startswith(f"http://127.0.0.1:{port}/")
    snapshot = records.snapshot_key(SANDBOX_ORG_ID, "webhooks")
    request = reapply_key("e2e")

    def said(what: str) -> list[dict[str, Any]]:
        return [line for line in log_lines(intake) if line.get("event") == what]

    async def settled() -> bool:
        """A pass has the webhook in its snapshot, and any re-apply it asked for (its
        creation is a change too) is done: the web process is idle."""
        if not await redis_client.hexists(snapshot, webhook.id):  # type: ignore[misc]
            return False
        if await redis_client.exists(request):
            return False
        return len(said("webhooks.auto_applied")) == len(said("webhooks.reapply_requested")) + 1

    await eventually(settled, within=60, what="the webhook in a snapshot, the web process idle")

    # Someone deactivates it directly in Cal.com (no webhook tells calhooks).
    edited_at = time.time()
    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_webhooks_controller_update_org_webhook",
            webhookId=webhook.id,
            active=False,
        )
    assert not sandbox.store.webhooks[webhook.id].active
    await eventually(
        lambda: sandbox.store.webhooks[webhook.id].active,
        within=60,  # a pass (1 s), then the web process' check (every 15 s)
        what="the webhook re-applied",
    )
    status = await records.read_status(redis_client, SANDBOX_ORG_ID)
    since = [
        e for e in status.events if e.trigger == triggers.WEBHOOK_CHANGED and e.at >= edited_at
    ]
    changed = since[-1]  # the oldest: the deactivation (the re-apply's change may follow)
    assert changed.subject == f"webhooks {webhook.id}"
    await eventually(
        lambda: changed.id in {line["event_id"] for line in said("webhooks.reapply_requested")},
        what="the web process to log the re-apply it took",
    )
    assert [w.id for w in sandbox.store.webhooks.values()] == [webhook.id]  # restored in place

    # The re-apply's own change is one more WEBHOOK_CHANGED; its re-apply changes nothing.
    await more_passes(redis_client, 3)
    assert sandbox.store.webhooks[webhook.id].active
    assert [w.id for w in sandbox.store.webhooks.values()] == [webhook.id]


async def test_a_worker_reconciles_each_connection_with_its_own_key_and_records(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """A `calhooks worker` reconciles the environment's org and a Globex connection: a user
    made in Globex behind calhooks' back becomes a processed ``calhooks.USER_CREATED`` of
    that connection; a connection without an org id is skipped, with its reason logged."""
    key = generate_key()
    store = ConnectionStore(redis_client, SecretBox(key))
    globex = await store.add(
        "globex", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID, base_url=sandbox.url
    )
    orphan = await store.add("orphan", Credentials(api_key=SECOND_API_KEY))
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "rules:\n  - name: newcomers\n    on: [calhooks.USER_CREATED]\n"
        "    connections: [globex]\n    steps:\n      - log: new\n"
    )
    env = environment(
        redis_server.url,
        sandbox.url,
        rules_file,
        reconcile_period=1,
        reconcile_grace=0,
        worker_rate_limit_per_minute=1200,
        reconcile_rate_share=0.5,
        encryption_key=key,
    )
    worker = start_worker("w1", env, tmp_path)
    processes.append(worker)
    globex_state = records.state_key(globex.pcid)

    async def baselines() -> bool:
        env_done = await hget(redis_client, STATE, "users:baseline") == b"1"
        return env_done and await hget(redis_client, globex_state, "users:baseline") == b"1"

    await eventually(baselines, what="the baselines of both organizations")
    async with sandbox.client(SECOND_API_KEY, SECOND_ORG_ID) as cal:
        await cal.call(
            "cal_organizations_users_controller_create_organization_user",
            email="e2e-newcomer@globex.example",
        )

    async def recovered() -> records.QueuedEvent | None:
        status = await records.read_status(redis_client, globex.pcid)
        found = [e for e in status.events if e.trigger == triggers.USER_CREATED]
        return found[0] if found else None

    event = await eventually(recovered, what="globex's calhooks.USER_CREATED")
    ran = EventLog(redis_client, ttl=600)

    async def done() -> list[dict[str, Any]] | None:
        log = await ran.read(event.id)
        finished = [r for r in log if r.get("kind") == "rule" and r.get("outcome") == "done"]
        return log if finished else None

    log = await eventually(done, what="the recovered event's rule")
    assert {r.get("connection") for r in log if "connection" in r} == {globex.pcid}
    # The environment's organization saw nothing of it; the orphan is skipped, not listed.
    assert (await records.read_status(redis_client, SANDBOX_ORG_ID)).events == []
    assert await redis_client.exists(records.state_key(orphan.pcid)) == 0
    skipped = [line for line in log_lines(worker) if line.get("event") == "reconcile.skipped"]
    assert skipped
    assert "has no org id" in skipped[0]["reason"]
    assert SECOND_API_KEY not in worker.output()
