"""`calhooks webhooks plan|apply|rotate|test|secrets` against the sandbox, Redis and the intake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from calhooks.service.app import create_app
from calhooks.service.cli.main import app
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.secretbox import generate_key
from calhooks.service.core.settings import Settings, get_settings
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app

runner = CliRunner()
URL = "https://hooks.example.com/webhooks/cal?calhooks=cli"


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis, sandbox: RunningSandbox
) -> Iterator[redis.Redis]:
    """The CLI's environment: the suite's Redis (flushed), a fresh key, the sandbox."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    values = {
        "CALHOOKS_REDIS_URL": redis_server.url,
        "CALHOOKS_ENCRYPTION_KEY": generate_key(),
        "CALHOOKS_API_URL": sandbox.url,
        "CALHOOKS_API_KEY": SANDBOX_API_KEY,
        "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
        "CALHOOKS_API_RETRIES": "0",
        "CALHOOKS_PUBLIC_URL": "https://hooks.example.com",
        "CALHOOKS_WEBHOOK_DEPLOYMENT": "cli",
        "CALHOOKS_WEBHOOK_EXTRA_TRIGGERS": "BOOKING_CREATED,OOO_CREATED",
        "CALHOOKS_WEBHOOK_SECRETS_REFRESH": "0.2",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CALHOOKS_RULES_FILE", raising=False)
    get_settings.cache_clear()
    yield client
    get_settings.cache_clear()
    client.close()


@pytest.fixture
def intake(env: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The intake on loopback with the CLI's settings; CALHOOKS_PUBLIC_URL points at it."""
    settings = Settings(data_dir=tmp_path, spool_dir=tmp_path / "spool")
    with serve_app(create_app(settings)) as url:
        monkeypatch.setenv("CALHOOKS_PUBLIC_URL", url)
        get_settings.cache_clear()
        yield url


def webhooks(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["webhooks", *args])
    assert result.exit_code == code, result.stdout + result.stderr
    return result.stdout


def stored_secret(sandbox: RunningSandbox) -> str:
    [webhook] = sandbox.store.webhooks.values()
    assert webhook.secret is not None
    return webhook.secret


def test_plan_apply_and_apply_again(env: redis.Redis, sandbox: RunningSandbox) -> None:
    """plan proposes, apply does and says what it did, a second apply finds nothing to do."""
    without_rules = runner.invoke(app, ["webhooks", "plan"])
    assert "note: CALHOOKS_RULES_FILE is not set" in without_rules.stderr
    planned = webhooks("plan")
    assert "+ generate a webhook secret" in planned
    assert f"+ create webhook -> {URL}: active, triggers BOOKING_CREATED, OOO_CREATED" in planned
    webhooks("plan", "--exit-code", code=2)
    assert sandbox.store.webhooks == {}

    applied = webhooks("apply")
    [webhook] = sandbox.store.webhooks.values()
    assert "generated webhook secret" in applied
    assert f"created webhook {webhook.id} -> {URL}" in applied
    again = webhooks("apply")
    assert f"no changes: webhook {webhook.id} is in sync" in again
    webhooks("plan", "--exit-code")
    as_json = json.loads(webhooks("plan", "--json"))
    assert as_json["changes"] is False
    assert as_json["inSync"]["id"] == webhook.id
    assert as_json["inSync"]["hasSecret"] is True


def test_no_command_prints_a_secret_without_show_secret(
    env: redis.Redis, sandbox: RunningSandbox
) -> None:
    """Secrets stay hidden in text and JSON output unless --show-secret is given."""
    outputs = [webhooks("apply"), webhooks("plan"), webhooks("plan", "--json")]
    outputs += [webhooks("apply", "--json"), webhooks("secrets"), webhooks("secrets", "--json")]
    first = stored_secret(sandbox)
    outputs.append(webhooks("rotate"))
    middle = stored_secret(sandbox)
    outputs.append(webhooks("rotate", "--json"))
    second = stored_secret(sandbox)
    assert len({first, middle, second}) == 3
    for text in outputs:
        assert first not in text
        assert middle not in text
        assert second not in text
        assert "whsec_" not in text
    shown = webhooks("plan", "--show-secret")
    assert second in shown
    assert json.loads(webhooks("plan", "--json", "--show-secret"))["desired"]["secret"] == second
    rotated = webhooks("rotate", "--show-secret")
    assert stored_secret(sandbox) in rotated
    listed = json.loads(webhooks("secrets", "--json", "--show-secret"))
    assert [row["secret"] for row in listed] == [stored_secret(sandbox), second, middle, first]
    assert [row["current"] for row in listed] == [True, False, False, False]


def test_rotate_reports_the_grace_period(env: redis.Redis, sandbox: RunningSandbox) -> None:
    """rotate names the new secret and how long the old one stays accepted."""
    applied = json.loads(webhooks("apply", "--json"))
    rotated = json.loads(webhooks("rotate", "--grace", "120", "--json"))
    assert rotated["webhookId"] == applied["done"][0]["webhookId"]
    assert rotated["secretId"] != applied["desired"]["secretId"]
    assert list(rotated["retired"]) == [applied["desired"]["secretId"]]
    listed = webhooks("secrets")
    assert f"{rotated['secretId']}  current" in listed
    assert f"{applied['desired']['secretId']}  valid until" in listed


def test_prune_through_the_cli(
    env: redis.Redis, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a public URL change the old webhook is listed as stale, then pruned."""
    webhooks("apply")
    [old] = sandbox.store.webhooks.values()
    monkeypatch.setenv("CALHOOKS_PUBLIC_URL", "https://new.example.com")
    get_settings.cache_clear()
    kept = webhooks("apply")
    assert f"! webhook {old.id} (old subscriber URL: {URL})" in kept
    assert "apply --prune deletes them" in kept
    pruned = webhooks("apply", "--prune")
    assert f"deleted webhook {old.id} (old subscriber URL: {URL})" in pruned
    assert [w.subscriber_url for w in sandbox.store.webhooks.values()] == [
        "https://new.example.com/webhooks/cal?calhooks=cli"
    ]


def test_test_delivery_through_the_sandbox_is_verified(
    intake: str, sandbox: RunningSandbox
) -> None:
    """The sandbox pings calhooks' webhook; the intake verifies it; the command says so."""
    webhooks("apply")
    [webhook] = sandbox.store.webhooks.values()
    out = webhooks("test")
    assert f"the sandbox pinged webhook {webhook.id} -> {intake}/webhooks/cal?calhooks=cli" in out
    assert "verified: the intake accepted the signed PING (HTTP 200)" in out
    [ping] = [d for d in sandbox.sandbox.deliverer.records if d.trigger == "PING"]
    assert ping.webhook_id == webhook.id
    direct = json.loads(webhooks("test", "--direct", "--json"))
    assert (direct["route"], direct["verified"], direct["status"]) == ("direct", True, 200)


def test_test_delivery_reports_a_rejected_signature(intake: str, sandbox: RunningSandbox) -> None:
    """A webhook whose secret was changed by hand is pinged, rejected, and the command fails."""
    webhooks("apply")
    [webhook] = sandbox.store.webhooks.values()
    webhook.secret = "changed-by-hand-in-cal-com"
    out = webhooks("test", code=1)
    assert "rejected: the intake did not verify the signature (HTTP 401)" in out
    assert "changed-by-hand" not in out


def test_test_without_a_webhook_asks_for_apply(env: redis.Redis) -> None:
    """Before any apply, test explains what to do."""
    result = runner.invoke(app, ["webhooks", "test"])
    assert result.exit_code == 1
    assert "run `calhooks webhooks apply` first" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CALHOOKS_PUBLIC_URL", "", "CALHOOKS_PUBLIC_URL is not set"),
        ("CALHOOKS_ENCRYPTION_KEY", "", "CALHOOKS_ENCRYPTION_KEY is required"),
        ("CALHOOKS_WEBHOOK_EXTRA_TRIGGERS", "BOOKING_CONFIRMED", "BOOKING_CONFIRMED"),
        ("CALHOOKS_WEBHOOK_EXTRA_TRIGGERS", "", "no triggers to subscribe to"),
        ("CALHOOKS_API_KEY", "cal_wrong", "401"),
    ],
)
def test_configuration_problems_are_one_clear_line(
    env: redis.Redis,
    sandbox: RunningSandbox,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    """A missing setting, a bad trigger or a refused key ends the command with one line."""
    if value:
        monkeypatch.setenv(variable, value)
    else:
        monkeypatch.delenv(variable)
    get_settings.cache_clear()
    result = runner.invoke(app, ["webhooks", "apply"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert sandbox.store.webhooks == {}


RULES = """
rules:
  - name: bookings
    on: [BOOKING_CREATED, BOOKING_CANCELLED]
    steps:
      - log: "booking ${{ payload.uid }}"
"""


def test_plan_lists_every_missing_prerequisite(
    env: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All the missing settings at once, naming CALHOOKS_RULES_FILE for the triggers."""
    for variable in ("CALHOOKS_PUBLIC_URL", "CALHOOKS_ENCRYPTION_KEY"):
        monkeypatch.delenv(variable)
    monkeypatch.delenv("CALHOOKS_WEBHOOK_EXTRA_TRIGGERS", raising=False)
    get_settings.cache_clear()
    result = runner.invoke(app, ["webhooks", "plan"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: 3 problems:"
    assert "CALHOOKS_ENCRYPTION_KEY is required" in lines[1]
    assert "CALHOOKS_PUBLIC_URL is not set" in lines[2]
    assert "no triggers to subscribe to: CALHOOKS_RULES_FILE is not set" in lines[3]
    assert "Traceback" not in result.output


def test_triggers_follow_the_rules_file(
    env: redis.Redis, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The webhook subscribes to the rules' triggers plus extras; a rules change updates it."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    monkeypatch.setenv("CALHOOKS_RULES_FILE", str(rules))
    monkeypatch.setenv("CALHOOKS_WEBHOOK_EXTRA_TRIGGERS", "MEETING_ENDED")
    get_settings.cache_clear()
    result = runner.invoke(app, ["webhooks", "apply"])
    assert result.exit_code == 0
    assert "CALHOOKS_RULES_FILE is not set" not in result.stderr
    [webhook] = sandbox.store.webhooks.values()
    assert sorted(webhook.triggers) == ["BOOKING_CANCELLED", "BOOKING_CREATED", "MEETING_ENDED"]

    rules.write_text(RULES.replace("BOOKING_CANCELLED", "OOO_CREATED"))
    planned = webhooks("plan")
    assert f"~ update webhook {webhook.id}: triggers +OOO_CREATED -BOOKING_CANCELLED" in planned
    applied = webhooks("apply")
    assert f"updated webhook {webhook.id}: triggers +OOO_CREATED -BOOKING_CANCELLED" in applied
    assert sorted(sandbox.store.webhooks[webhook.id].triggers) == [
        "BOOKING_CREATED",
        "MEETING_ENDED",
        "OOO_CREATED",
    ]


def test_a_broken_rules_file_changes_nothing(
    env: redis.Redis, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Rules that do not load stop apply with their problems; the webhook is left as it was."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: x\n    on: NOT_A_TRIGGER\n    steps: []\n")
    monkeypatch.setenv("CALHOOKS_RULES_FILE", str(rules))
    get_settings.cache_clear()
    result = runner.invoke(app, ["webhooks", "apply"])
    assert result.exit_code == 1
    assert "CALHOOKS_RULES_FILE" in result.stderr
    assert "problem" in result.stderr
    assert sandbox.store.webhooks == {}
