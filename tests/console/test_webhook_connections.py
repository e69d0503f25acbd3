"""The webhooks page with connections: the sandbox's Acme, Globex and Acme Labs as connections.

One section per organization with its plan and current secret (never a value), a test
delivery for a chosen connection reaching that connection's intake URL signed with its own
secret, the read-only role refused, a failing connection shown in its own section, paging.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from calhooks.service.app import create_app
from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.store import ConnectionInfo, ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.core.settings import Settings
from calhooks.service.sandbox import SANDBOX_ORG_ID
from calhooks.service.sandbox.seed import (
    MANAGED_API_KEY,
    MANAGED_ORG_ID,
    SANDBOX_API_KEY,
    SECOND_API_KEY,
    SECOND_ORG_ID,
)
from calhooks.service.subscriptions.startup import auto_apply_all
from calhooks.service.subscriptions.targets import connection_targets
from tests.console.conftest import OPERATOR, READER, console_settings, csrf_of
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app
from tests.subscriptions.test_rotate import REFRESH

ORGS = (
    ("acme", SANDBOX_API_KEY, SANDBOX_ORG_ID),
    ("globex", SECOND_API_KEY, SECOND_ORG_ID),
    ("acme-labs", MANAGED_API_KEY, MANAGED_ORG_ID),
)


@dataclass
class Console:
    url: str
    settings: Settings
    connections: dict[str, ConnectionInfo]


@pytest.fixture
async def console(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,  # flushed before the app starts
    tmp_path: Path,
) -> AsyncIterator[Console]:
    """The web app (intake and console) with the three organizations as connections and the
    environment's organization (Acme) configured; every webhook applied."""
    port = free_port("127.0.0.1")
    settings = console_settings(
        tmp_path, redis_server.url, api_url=sandbox.url, public_url=f"http://127.0.0.1:{port}",
        api_key=SANDBOX_API_KEY, org_id=SANDBOX_ORG_ID, webhook_secrets=None,
        encryption_key=Fernet.generate_key().decode(), webhook_secrets_refresh=REFRESH,
    )  # fmt: skip
    store = ConnectionStore.from_settings(settings, redis_client)
    connections = {
        name: await store.add(name, Credentials(api_key=key), org_id=org_id, base_url=sandbox.url)
        for name, key, org_id in ORGS
    }
    with serve_app(create_app(settings, redis_url=redis_server.url), port=port) as url:
        results = await auto_apply_all(settings, redis_client)
        assert len(results) == 4
        assert all(r is not None for r in results)
        yield Console(url, settings, connections)


@contextmanager
def signed_in(url: str, user: tuple[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as client:
        form = client.get("/console/sign-in")
        answer = client.post(
            "/console/sign-in",
            data={"name": user[0], "password": user[1], "csrf": csrf_of(form.text)},
        )
        assert answer.status_code == 200, answer.text
        yield client


def sections(html: str) -> dict[str, str]:
    """Each organization's section of the page by its key ("" for the environment's)."""
    found = re.findall(r'data-connection="([^"]*)">(.*?)</section>', html, re.S)
    return dict(found)


def webhook_of(sandbox: RunningSandbox, pcid: str) -> str:
    [hook] = [w.id for w in sandbox.store.webhooks.values() if f"/cal/{pcid}?" in w.subscriber_url]
    return hook


@pytest.mark.slow
async def test_each_connection_has_its_section_with_its_plan(
    sandbox: RunningSandbox, console: Console, redis_client: aioredis.Redis
) -> None:
    acme, globex, labs = (console.connections[name] for name, *_ in ORGS)
    # Acme's webhook deactivated (to update), Acme Labs' deleted (to create), Globex in sync.
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=30) as http:
        changed = await http.patch(
            f"/v2/organizations/{SANDBOX_ORG_ID}/webhooks/{webhook_of(sandbox, acme.pcid)}",
            headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"},
            json={"active": False},
        )
        assert changed.status_code == 200, changed.text
        deleted = await http.delete(
            f"/v2/organizations/{MANAGED_ORG_ID}/webhooks/{webhook_of(sandbox, labs.pcid)}",
            headers={"Authorization": f"Bearer {MANAGED_API_KEY}"},
        )
        assert deleted.status_code == 200, deleted.text
    # A connection whose key Cal.com refuses fails in its own section only.
    store = ConnectionStore.from_settings(console.settings, redis_client)
    broken = await store.add(
        "broken", Credentials(api_key="cal_wrong_key"), org_id=SECOND_ORG_ID, base_url=sandbox.url
    )
    with signed_in(console.url, OPERATOR) as client:
        page = client.get("/console/webhooks")
    assert page.status_code == 200
    found = sections(page.text)
    assert set(found) == {"", acme.pcid, globex.pcid, labs.pcid, broken.pcid}
    expected = {acme.pcid: "to update", globex.pcid: "in sync", labs.pcid: "to create"}
    for info in (acme, globex, labs):
        section = found[info.pcid]
        assert f"<dt>Plan</dt><dd>{expected[info.pcid]}</dd>" in section, info.name
        assert f"<code>{info.pcid}</code>" in section
        assert f"<dd>{info.tenant}</dd>" in section
        assert f"{console.url}/webhooks/cal/{info.pcid}?calhooks=default.{info.pcid}" in section
        [target] = await connection_targets(
            console.settings, redis_client, [info.pcid], everything=False
        )
        current = await target.store(console.settings, redis_client).current()
        assert current is not None
        assert f"<dt>Current secret</dt><dd><code>{current.id}</code>, " in section
        assert current.value not in page.text
    assert "<dt>Plan</dt><dd>in sync</dd>" in found[""]
    assert "<dt>Plan</dt><dd>-</dd>" in found[broken.pcid]
    assert 'class="bad" role="alert"' in found[broken.pcid]
    assert "401" in found[broken.pcid]  # Cal.com refused the key
    assert not any(w.secret and w.secret in page.text for w in sandbox.store.webhooks.values())


@pytest.mark.slow
async def test_a_ping_for_globex_reaches_globex_signed_with_its_secret(
    sandbox: RunningSandbox, console: Console, redis_client: aioredis.Redis
) -> None:
    globex = console.connections["globex"]
    [target] = await connection_targets(
        console.settings, redis_client, ["globex"], everything=False
    )
    secret = await target.store(console.settings, redis_client).current()
    assert secret is not None
    sandbox.sandbox.deliverer.clear()
    with signed_in(console.url, OPERATOR) as client:
        page = client.get("/console/webhooks")
        answer = client.post(
            "/console/webhooks/test", data={"csrf": csrf_of(page.text), "connection": "globex"}
        )
    assert answer.status_code == 200
    status = answer.text[answer.text.index('role="status"') :].split("</p>", 1)[0]
    assert f"connection globex ({globex.pcid})" in status
    assert "verified: the intake accepted the signed PING" in status, status
    [delivery] = list(sandbox.sandbox.deliverer.records)
    assert delivery.url.startswith(f"{console.url}/webhooks/cal/{globex.pcid}?")
    assert delivery.trigger == "PING"
    assert delivery.status == 200
    expected = hmac.new(secret.value.encode(), delivery.raw.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.signature, expected)
    assert secret.value not in answer.text


@pytest.mark.slow
async def test_read_only_users_cannot_send_a_test_delivery(
    sandbox: RunningSandbox, console: Console
) -> None:
    sandbox.sandbox.deliverer.clear()
    with signed_in(console.url, READER) as client:
        page = client.get("/console/webhooks")
        assert page.status_code == 200
        assert "Send a test delivery" not in page.text
        answer = client.post(
            "/console/webhooks/test", data={"csrf": csrf_of(page.text), "connection": "globex"}
        )
    assert answer.status_code == 403
    assert not sandbox.sandbox.deliverer.records


@pytest.mark.slow
async def test_an_unknown_connection_is_one_line_not_a_500(console: Console) -> None:
    with signed_in(console.url, OPERATOR) as client:
        page = client.get("/console/webhooks")
        answer = client.post(
            "/console/webhooks/test", data={"csrf": csrf_of(page.text), "connection": "nope"}
        )
    assert answer.status_code == 400
    assert "unknown connection &#39;nope&#39;" in answer.text


async def test_many_connections_are_paged_by_fifty(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """53 connections (no org id: each section fails at once, without Cal.com): page 1 shows
    50 of them, page 2 the other 3; no environment organization is configured."""
    settings = console_settings(
        tmp_path, redis_server.url, encryption_key=Fernet.generate_key().decode(),
        public_url="https://hooks.example.com",
    )  # fmt: skip
    store = ConnectionStore.from_settings(settings, redis_client)
    for index in range(53):
        await store.add(f"org-{index:02d}", Credentials(api_key=f"cal_key_{index}"))
    with (
        serve_app(create_app(settings, redis_url=redis_server.url)) as url,
        signed_in(url, OPERATOR) as client,
    ):
        first = client.get("/console/webhooks")
        second = client.get("/console/webhooks", params={"page": "2"})
        beyond = client.get("/console/webhooks", params={"page": "x"})
    assert first.status_code == second.status_code == beyond.status_code == 200
    assert len(sections(first.text)) == 50
    assert "Connections 1-50 of 53 (page 1 of 2)" in first.text
    assert "has no org id" in first.text
    assert len(sections(second.text)) == 3
    assert "Connections 51-53 of 53 (page 2 of 2)" in second.text
    assert "org-52" in second.text
    assert "org-52" not in first.text
    assert len(sections(beyond.text)) == 50
