"""`calhooks reconcile` against the sandbox and the suite's Redis: a baseline first, then the
events of a change (printed by ``--dry-run`` without queueing, queued by a real pass), and a
one-line error while another pass holds the lock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from calhooks.service.calcom.client import Credentials
from calhooks.service.cli.main import app
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.core.settings import get_settings
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID
from calhooks.service.sandbox.seed import SECOND_API_KEY, SECOND_ORG_ID
from tests.sandbox.server import RunningSandbox

runner = CliRunner()


@pytest.fixture
def redis_url(
    redis_server: EmbeddedRedis, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("CALHOOKS_REDIS_URL", redis_server.url)
    monkeypatch.setenv("CALHOOKS_API_URL", sandbox.url)
    monkeypatch.setenv("CALHOOKS_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("CALHOOKS_ORG_ID", str(SANDBOX_ORG_ID))
    get_settings.cache_clear()
    asyncio.run(_redis(redis_server.url, "FLUSHALL"))
    yield redis_server.url
    get_settings.cache_clear()


async def _redis(url: str, *command: str) -> object:
    client = aioredis.Redis.from_url(url)
    try:
        return await client.execute_command(*command)
    finally:
        await client.aclose()


def test_baseline_then_dry_run_then_a_pass(redis_url: str, sandbox: RunningSandbox) -> None:
    first = runner.invoke(app, ["reconcile"])
    assert first.exit_code == 0, first.output
    assert (
        "baseline taken for memberships, assignments, users, ooo, webhooks, attributes, bookings"
        in first.output
    )
    assert "queued 0 of 0 events" in first.output

    response = httpx.post(
        f"{sandbox.url}/v2/organizations/{SANDBOX_ORG_ID}/users",
        json={"email": "cli-newcomer@acme.example"},
        headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"},
    )
    assert response.status_code == 201, response.text

    dry = runner.invoke(app, ["reconcile", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "calhooks.USER_CREATED  users " in dry.output
    assert "would queue" in dry.output
    assert asyncio.run(_redis(redis_url, "ZCARD", "arq:queue")) == 0

    real = runner.invoke(app, ["reconcile", "--json"])
    assert real.exit_code == 0, real.output
    report = json.loads(real.output)
    triggers = sorted(event["trigger"] for event in report["events"])
    assert triggers == ["calhooks.MEMBERSHIP_CREATED", "calhooks.USER_CREATED"]
    assert report["queued"] == 2
    assert asyncio.run(_redis(redis_url, "ZCARD", "arq:queue")) == 2


def test_a_pass_running_elsewhere_is_a_one_line_error(redis_url: str) -> None:
    asyncio.run(_redis(redis_url, "SET", f"calhooks:reconcile:{SANDBOX_ORG_ID}:lock", "other"))
    result = runner.invoke(app, ["reconcile"])
    assert result.exit_code == 1
    assert "error: another reconciliation pass is running" in result.output


def test_without_an_organization_it_says_so(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALHOOKS_ORG_ID")
    get_settings.cache_clear()
    result = runner.invoke(app, ["reconcile"])
    assert result.exit_code == 1
    assert "CALHOOKS_ORG_ID is not set" in result.output


def test_a_refused_key_is_a_one_line_error_and_releases_the_lock(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALHOOKS_API_KEY", "cal_test_not_a_sandbox_key")
    get_settings.cache_clear()
    result = runner.invoke(app, ["reconcile"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: "), line
    assert "401" in line, line
    assert "cal_test_not_a_sandbox_key" not in result.output
    lock = f"calhooks:reconcile:{SANDBOX_ORG_ID}:lock"
    assert asyncio.run(_redis(redis_url, "EXISTS", lock)) == 0


def _add_connections(url: str, key: str, sandbox: RunningSandbox) -> dict[str, str]:
    """Globex and a connection without an org id, stored as `calhooks connections add` does."""

    async def add() -> dict[str, str]:
        client = aioredis.Redis.from_url(url)
        store = ConnectionStore(client, SecretBox(key))
        try:
            globex = await store.add(
                "globex", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID,
                base_url=sandbox.url,
            )  # fmt: skip
            orphan = await store.add("orphan", Credentials(api_key=SECOND_API_KEY))
            return {"globex": globex.pcid, "orphan": orphan.pcid}
        finally:
            await client.aclose()

    return asyncio.run(add())


def test_a_connection_s_organization_by_name_or_pcid(
    redis_url: str, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    monkeypatch.setenv("CALHOOKS_ENCRYPTION_KEY", key)
    get_settings.cache_clear()
    pcids = _add_connections(redis_url, key, sandbox)
    globex = pcids["globex"]
    first = runner.invoke(app, ["reconcile", "--connection", "globex"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"== globex ({globex})\n")
    assert "baseline taken for memberships" in first.output
    # Only Globex's records: the environment's organization was not reconciled.
    assert asyncio.run(_redis(redis_url, "KEYS", "calhooks:reconcile:1:*")) == []
    assert asyncio.run(_redis(redis_url, "EXISTS", f"calhooks:conn:{globex}:reconcile:state"))

    response = httpx.post(
        f"{sandbox.url}/v2/organizations/{SECOND_ORG_ID}/users",
        json={"email": "cli-newcomer@globex.example"},
        headers={"Authorization": f"Bearer {SECOND_API_KEY}"},
    )
    assert response.status_code == 201, response.text
    real = runner.invoke(app, ["reconcile", "--connection", globex, "--json"])
    assert real.exit_code == 0, real.output
    [report] = json.loads(real.output)
    assert report["connection"] == globex
    assert report["name"] == "globex"
    assert sorted(e["trigger"] for e in report["events"]) == [
        "calhooks.MEMBERSHIP_CREATED",
        "calhooks.USER_CREATED",
    ]
    assert {e["connection"] for e in report["events"]} == {globex}
    assert report["queued"] == 2

    unknown = runner.invoke(app, ["reconcile", "--connection", "nobody"])
    assert unknown.exit_code == 1
    assert unknown.output.strip().splitlines() == [
        "error: unknown connection 'nobody': give a name of the default tenant or a PCID"
        " (list them with `calhooks connections list`)"
    ]
    both = runner.invoke(app, ["reconcile", "--connection", "globex", "--all-connections"])
    assert both.exit_code == 1
    assert "not both" in both.output


def test_all_connections_go_on_past_one_that_cannot_be_used(
    redis_url: str, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    monkeypatch.setenv("CALHOOKS_ENCRYPTION_KEY", key)
    get_settings.cache_clear()
    pcids = _add_connections(redis_url, key, sandbox)
    result = runner.invoke(app, ["reconcile", "--all-connections", "--dry-run", "--json"])
    assert result.exit_code == 1, result.output
    by_name = {item["name"]: item for item in json.loads(result.output)}
    assert by_name["globex"]["connection"] == pcids["globex"]
    assert by_name["globex"]["dry_run"] is True
    assert "has no org id" in by_name["orphan"]["error"]
    assert asyncio.run(_redis(redis_url, "KEYS", "calhooks:*reconcile*")) == []  # a dry run
