"""`calhooks connections remove`: the connection's own webhook, then the connection, then its
secrets - and `connections add` saying how the webhook gets made. Against the sandbox's Acme
(the environment's organization) and Globex (a connection), with the suite's Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis
from typer.testing import CliRunner

from calhooks.service.cli.main import app
from calhooks.service.connections.store import RECORDS_KEY
from calhooks.service.core.embedded_redis import free_port
from calhooks.service.core.redisconn import create_redis
from calhooks.service.core.settings import get_settings
from calhooks.service.sandbox import SANDBOX_API_KEY
from calhooks.service.sandbox.seed import SECOND_API_KEY, SECOND_ORG_ID
from calhooks.service.subscriptions.remote import CREATE_TOOL, DELETE_TOOL
from calhooks.service.subscriptions.secret_store import WebhookSecretStore
from tests.cli.test_webhooks import env, webhooks  # noqa: F401 - fixtures
from tests.cli.test_webhooks_connections import add_connection
from tests.sandbox.server import RunningSandbox

runner = CliRunner()
FOREIGN_URL = "https://elsewhere.example.com/hooks"


def secret_keys(client: redis.Redis, pcid: str) -> list[bytes]:
    return list(client.scan_iter(match=f"calhooks:webhooks:cli.{pcid}:*"))


def stored(client: redis.Redis) -> list[bytes]:
    return list(client.hkeys(RECORDS_KEY))  # type: ignore[arg-type]


async def add_foreign_webhook(sandbox: RunningSandbox, api_key: str, org_id: int) -> str:
    """A webhook someone made by hand in the organization (no calhooks mark)."""
    async with sandbox.client(api_key=api_key, org_id=org_id) as cal:
        made = await cal.call(
            CREATE_TOOL, subscriberUrl=FOREIGN_URL, triggers=["BOOKING_CREATED"], active=True
        )
    return str(made["id"])


def test_remove_deletes_its_webhook_with_its_key_then_its_secrets_and_nothing_else(
    env: redis.Redis,  # noqa: F811
    sandbox: RunningSandbox,
) -> None:
    """Globex's own webhook is deleted in org 2 by Globex's key; a hand-made webhook in Globex,
    the environment's webhook and another connection's webhook (both in Acme) stay; the
    connection and every key of its secret store are gone; no key is printed."""
    globex = add_connection("globex", SECOND_API_KEY, SECOND_ORG_ID, sandbox.url)
    acme = add_connection("acme", SANDBOX_API_KEY, 1, sandbox.url)
    webhooks("apply", "--all-connections")
    webhooks("apply")  # the environment's organization, Acme
    foreign = asyncio.run(add_foreign_webhook(sandbox, SECOND_API_KEY, SECOND_ORG_ID))
    [own] = [w.id for w in sandbox.store.webhooks.values() if f"cli.{globex}" in w.subscriber_url]
    assert secret_keys(env, globex)
    before = set(sandbox.store.webhooks)

    result = runner.invoke(app, ["connections", "remove", "globex"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.strip().startswith(
        f"removed 'globex' ({globex}): deleted its Cal.com webhook {own} in org {SECOND_ORG_ID};"
        " left the organization's 1 other webhook(s) alone; deleted "
    )
    assert set(sandbox.store.webhooks) == before - {own}
    assert foreign in sandbox.store.webhooks
    [delete] = sandbox.requests(DELETE_TOOL)
    assert (delete.credential, delete.path) == (
        "key-globex-admin",
        f"/v2/organizations/{SECOND_ORG_ID}/webhooks/{own}",
    )
    assert secret_keys(env, globex) == []
    assert secret_keys(env, acme)  # the other connection's store is untouched
    assert env.exists("calhooks:webhooks:cli:current")  # and so is the environment's
    assert stored(env) == [acme.encode()]
    for key in (SECOND_API_KEY, SANDBOX_API_KEY):
        assert key not in result.stdout + result.stderr
    webhooks("plan", "--exit-code")  # the environment's webhook is as it was
    webhooks("plan", "--connection", "acme", "--exit-code")


def test_cal_com_unreachable_keeps_the_connection_unless_forced(
    env: redis.Redis,  # noqa: F811
) -> None:
    """Cal.com cannot be reached: exit 1, one line, the connection and its secrets kept;
    with --force it is removed all the same, with a warning naming the webhook's URL."""
    nowhere = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    pcid = add_connection("gone", SECOND_API_KEY, SECOND_ORG_ID, nowhere)
    settings = get_settings()

    async def make_secret() -> None:
        client = create_redis(settings)
        try:
            await WebhookSecretStore.from_settings(settings, client, connection=pcid).add(
                make_current=True
            )
        finally:
            await client.aclose()

    asyncio.run(make_secret())
    keys = secret_keys(env, pcid)
    assert keys

    refused = runner.invoke(app, ["connections", "remove", "gone"])
    assert refused.exit_code == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(
        f"error: cannot delete the Cal.com webhook of connection gone ({pcid}) in org"
        f" {SECOND_ORG_ID}: "
    )
    assert "the connection is kept" in refused.stderr
    assert "--force" in refused.stderr
    assert stored(env) == [pcid.encode()]
    assert sorted(secret_keys(env, pcid)) == sorted(keys)
    assert SECOND_API_KEY not in refused.stdout + refused.stderr

    forced = runner.invoke(app, ["connections", "remove", "gone", "--force"])
    assert forced.exit_code == 0, forced.stderr
    assert f"delete the webhook delivering to /webhooks/cal/{pcid}" in forced.stderr
    assert forced.stdout.strip() == (
        f"removed 'gone' ({pcid}): its Cal.com webhook may remain (--force);"
        f" deleted {len(keys)} webhook-secret key(s)"
    )
    assert stored(env) == []
    assert secret_keys(env, pcid) == []
    assert SECOND_API_KEY not in forced.stdout + forced.stderr


def test_keep_webhook_leaves_cal_com_alone(
    env: redis.Redis,  # noqa: F811
    sandbox: RunningSandbox,
) -> None:
    """--keep-webhook makes no Cal.com call: the webhook stays, the secrets go."""
    pcid = add_connection("globex", SECOND_API_KEY, SECOND_ORG_ID, sandbox.url)
    webhooks("apply", "--connection", "globex")
    calls = len(sandbox.requests())
    result = runner.invoke(app, ["connections", "remove", pcid, "--keep-webhook"])
    assert result.exit_code == 0, result.stderr
    assert "Cal.com left alone (--keep-webhook)" in result.stdout
    assert len(sandbox.requests()) == calls
    assert len(sandbox.store.webhooks) == 1
    assert secret_keys(env, pcid) == []


@pytest.mark.parametrize("auto_apply", [True, False])
def test_add_says_how_the_webhook_gets_made(
    env: redis.Redis,  # noqa: F811
    sandbox: RunningSandbox,
    monkeypatch: pytest.MonkeyPatch,
    auto_apply: bool,
) -> None:
    monkeypatch.setenv("CALHOOKS_WEBHOOKS_AUTO_APPLY", str(auto_apply).lower())
    get_settings.cache_clear()
    result = runner.invoke(
        app,
        ["connections", "add", "globex", "--api-key", "-", "--org-id", str(SECOND_ORG_ID)],
        input=SECOND_API_KEY,
    )
    assert result.exit_code == 0, result.stderr
    pcid = result.stdout.strip()
    if auto_apply:
        assert (
            "webhook: CALHOOKS_WEBHOOKS_AUTO_APPLY is on, so the web process creates it in the"
            " organization within 0.2 s" in result.stderr
        )
    else:
        assert (
            "webhook: not created yet (CALHOOKS_WEBHOOKS_AUTO_APPLY is off): run"
            " `calhooks webhooks apply --connection globex`" in result.stderr
        )
    assert f"its intake URL /webhooks/cal/{pcid} works now" in result.stderr
    other = runner.invoke(
        app, ["connections", "add", "mcp-only", "--api-key", "-"], input=SECOND_API_KEY
    )
    assert "webhook: none, as the connection has no org id" in other.stderr
    assert SECOND_API_KEY not in result.stderr + other.stderr
