"""The console's reconciliation page in-process, over the records real passes wrote (the
sandbox over real HTTP, the suite's Redis): passes, the lock's holder, the snapshot, the
events recovered with links to their pages; only an operator may ask for a pass now."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from calhooks.service.app import create_app
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.sandbox.seed import SECOND_API_KEY, SECOND_ORG_ID
from calhooks.workers.reconcile import periodic, records, triggers
from calhooks.workers.reconcile.reconciler import Reconciler, RunReport
from tests.console.conftest import OPERATOR, READER, console_settings, csrf_of, sign_in
from tests.console.test_pages import record
from tests.sandbox.server import RunningSandbox

CREATE_USER = "cal_organizations_users_controller_create_organization_user"
PAGE = "/console/reconciliation"


@pytest.fixture
def org_client(
    tmp_path: Path, redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> Iterator[TestClient]:
    settings = console_settings(tmp_path, redis_server.url, org_id=1)
    with TestClient(create_app(settings, redis_url=redis_server.url)) as test_client:
        yield test_client


def two_passes(sandbox: RunningSandbox, url: str) -> RunReport:
    """A baseline pass, a user created behind calhooks' back, and the pass that sees it."""

    async def run() -> RunReport:
        client = aioredis.Redis.from_url(url)
        try:

            def make() -> Reconciler:
                return Reconciler(client, sandbox.client(), org_id=1, queue_name="arq:queue",
                                  dedupe_window=60, budget=40)  # fmt: skip

            await periodic.run_locked(make(), holder="worker-1")
            async with sandbox.client() as cal:
                await cal.call(CREATE_USER, email="newcomer@acme.example")
            return await periodic.run_locked(make(), holder="worker-1")
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_the_page_shows_passes_the_lock_the_snapshot_and_recent_events(
    org_client: TestClient,
    sync_redis: redis.Redis,
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
) -> None:
    report = two_passes(sandbox, redis_server.url)
    [user_event] = [e for e in report.queued_events if e.trigger == triggers.USER_CREATED]
    record(sync_redis, user_event.id, trigger=user_event.trigger, outcome="done")
    sync_redis.set(records.lock_key(1), records.lock_value("worker-2"), px=60_000)
    sign_in(org_client, READER)
    page = org_client.get(PAGE)
    assert page.status_code == 200, page.text
    html = page.text
    assert f'<a href="{PAGE}" aria-current="page">Reconciliation</a>' in html
    assert "held by <code>worker-2</code>" in html  # a pass is running
    assert "<dt>Passes so far</dt><dd>2</dd>" in html
    assert html.count("<code>worker-1</code>") == 2  # two passes in the history
    assert f"{report.calls} / 40" in html
    assert f"users {report.seen['users']}" in html
    assert f"<code>{triggers.USER_CREATED}</code> 1" in html
    assert f"<code>{triggers.MEMBERSHIP_CREATED}</code> 1" in html
    assert "<tr><td>users</td><td>4</td></tr>" in html  # the snapshot
    for event in report.queued_events:
        assert f'<a href="/console/events/{event.id}"><code>{event.id[:12]}</code></a>' in html
    assert '<span class="tag done">done</span></td></tr>' in html  # the user event's outcome
    assert "Running a pass now needs the operator role." in html
    assert "Run a pass now" not in html
    # The event's own page is where the link goes; a dry run of it says where it came from.
    assert org_client.get(f"/console/events/{user_event.id}").status_code == 200
    dry = org_client.post(
        "/console/rules/dry-run", data={"csrf": csrf_of(html), "event": user_event.id}
    )
    assert dry.status_code == 200
    assert f"<code>{user_event.id[:12]}</code> <small>(source reconcile)</small>" in dry.text


def test_only_an_operator_asks_for_a_pass_now(
    org_client: TestClient, sync_redis: redis.Redis
) -> None:
    sign_in(org_client, READER)
    csrf = csrf_of(org_client.get(PAGE).text)
    refused = org_client.post("/console/reconciliation/run", data={"csrf": csrf})
    assert refused.status_code == 403
    assert "read-only" in refused.text
    assert sync_redis.get(records.run_key(1)) is None

    org_client.cookies.clear()
    sign_in(org_client, OPERATOR)
    page = org_client.get(PAGE).text
    assert "Run a pass now</button>" in page
    no_token = org_client.post("/console/reconciliation/run", data={})
    assert no_token.status_code == 403
    assert sync_redis.get(records.run_key(1)) is None
    asked = org_client.post("/console/reconciliation/run", data={"csrf": csrf_of(page)})
    assert asked.status_code == 200  # followed the redirect back to the page
    assert str(asked.url).startswith(f"http://testserver{PAGE}?notice=")
    assert "A pass is requested" in asked.text
    assert "by console: olga, waiting for a worker" in asked.text
    assert sync_redis.get(records.run_key(1)) == b"console: olga"
    ttl = int(sync_redis.ttl(records.run_key(1)))  # type: ignore[arg-type]
    assert 0 < ttl <= records.RUN_REQUEST_TTL


def test_without_an_organization_the_page_says_reconciliation_is_off(
    client: TestClient, sync_redis: redis.Redis
) -> None:
    sign_in(client, OPERATOR)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert "CALHOOKS_ORG_ID is not set" in page.text
    asked = client.post("/console/reconciliation/run", data={"csrf": csrf_of(page.text)})
    assert "No pass was requested" in asked.text
    assert sync_redis.keys("calhooks:reconcile:*") == []


def connection_pass(sandbox: RunningSandbox, url: str, pcid: str) -> RunReport:
    """A pass of a connection to Globex (its own key and records), as a worker runs it."""

    async def run() -> RunReport:
        client = aioredis.Redis.from_url(url)
        try:
            reconciler = Reconciler(
                client, sandbox.client(SECOND_API_KEY, SECOND_ORG_ID), org_id=SECOND_ORG_ID,
                queue_name="arq:queue", dedupe_window=60, connection=pcid, name="globex",
            )  # fmt: skip
            return await periodic.run_locked(reconciler, holder="worker-3")
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_each_pass_names_its_organization(
    org_client: TestClient, sandbox: RunningSandbox, redis_server: EmbeddedRedis
) -> None:
    two_passes(sandbox, redis_server.url)
    connection_pass(sandbox, redis_server.url, "pcid-globex")
    sign_in(org_client, READER)
    html = org_client.get(PAGE).text
    assert '<th scope="col">Organization</th>' in html
    rows = html.split('<caption class="sr-only">The last reconciliation passes')[1]
    assert rows.index("<td>globex (pcid-globex)</td>") < rows.index(
        "<td>environment (org 1)</td>"
    )  # newest first
    assert rows.count("<td>environment (org 1)</td>") == 2
    assert "<tr><td>users</td><td>4</td></tr>" in html  # the environment's own snapshot


def test_without_an_environment_organization_the_connections_passes_show(
    client: TestClient, sandbox: RunningSandbox, redis_server: EmbeddedRedis
) -> None:
    connection_pass(sandbox, redis_server.url, "pcid-globex")
    sign_in(client, READER)
    html = client.get(PAGE).text
    assert "CALHOOKS_ORG_ID is not set" in html
    assert "<td>globex (pcid-globex)</td>" in html
    assert "<code>worker-3</code>" in html
