"""`calhooks webhooks ... --connection/--all-connections` against the sandbox and the intake."""

from __future__ import annotations

import json
import re
from typing import Any

import redis
from typer.testing import CliRunner

from calhooks.service.cli.main import app
from calhooks.service.sandbox.seed import (
    MANAGED_API_KEY,
    MANAGED_ORG_ID,
    SECOND_API_KEY,
    SECOND_ORG_ID,
)
from calhooks.service.subscriptions.remote import CREATE_TOOL
from tests.cli.test_webhooks import env, intake, webhooks  # noqa: F401 - fixtures
from tests.sandbox.server import RunningSandbox

runner = CliRunner()
#: A log line of the intake served in this process (it shares the CLI's captured stdout).
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def parsed(out: str) -> Any:
    """The command's JSON, without the intake's log lines printed meanwhile."""
    return json.loads("\n".join(line for line in out.splitlines() if not LOG_LINE.match(line)))


def add_connection(name: str, key: str, org_id: int, base_url: str) -> str:
    """`calhooks connections add`, the key on stdin; the new PCID."""
    result = runner.invoke(
        app,
        [
            "connections", "add", name, "--api-key", "-", "--org-id", str(org_id),
            "--base-url", base_url, "--json",
        ],
        input=key + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    pcid: str = parsed(result.stdout)["pcid"]
    return pcid


def test_apply_for_all_connections_each_in_its_org_then_test_and_rotate_one(
    intake: str,  # noqa: F811
    sandbox: RunningSandbox,
) -> None:
    """--all-connections applies one webhook per connection with its own key; the environment's
    organization is left alone; test and rotate work on the named connection only."""
    globex = add_connection("globex", SECOND_API_KEY, SECOND_ORG_ID, sandbox.url)
    labs = add_connection("labs", MANAGED_API_KEY, MANAGED_ORG_ID, sandbox.url)
    planned = parsed(webhooks("plan", "--all-connections", "--json"))
    assert [(p["connection"], p["name"]) for p in planned] == [(globex, "globex"), (labs, "labs")]
    assert planned[0]["result"]["desired"]["subscriberUrl"] == (
        f"{intake}/webhooks/cal/{globex}?calhooks=cli.{globex}"
    )
    out = webhooks("apply", "--all-connections")
    assert f"connection globex ({globex}):" in out
    assert f"connection labs ({labs}):" in out
    creates = {r.body["subscriberUrl"]: r.credential for r in sandbox.requests(CREATE_TOOL)}
    assert creates == {
        f"{intake}/webhooks/cal/{globex}?calhooks=cli.{globex}": "key-globex-admin",
        f"{intake}/webhooks/cal/{labs}?calhooks=cli.{labs}": "key-acme-labs",
    }
    webhooks("plan", "--all-connections", "--exit-code")  # in sync: exit 0
    webhooks("plan", "--exit-code", code=2)  # the environment's organization was not applied

    tested = webhooks("test", "--connection", "globex")
    assert f"-> {intake}/webhooks/cal/{globex}?calhooks=cli.{globex}" in tested
    assert "verified: the intake accepted the signed PING (HTTP 200)" in tested
    before = {w.id: w.secret for w in sandbox.store.webhooks.values()}
    rotated = parsed(webhooks("rotate", "--connection", globex, "--json"))
    [entry] = rotated
    assert entry["connection"] == globex
    after = {w.id: w.secret for w in sandbox.store.webhooks.values()}
    changed = [hook for hook in after if after[hook] != before[hook]]
    assert changed == [entry["result"]["webhookId"]]
    assert "verified" in webhooks("test", "--connection", "globex")
    secrets = parsed(webhooks("secrets", "--connection", "globex", "--json"))
    assert len(secrets[0]["result"]) == 2  # the new one, and the old one for its grace period


def test_unknown_connections_and_mixed_options_fail_in_one_line(
    env: redis.Redis,  # noqa: F811
) -> None:
    """A connection nobody added, or both options at once: one clear line, exit 1."""
    result = runner.invoke(app, ["webhooks", "plan", "--connection", "nope"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "unknown connection 'nope'" in result.stderr
    both = runner.invoke(app, ["webhooks", "apply", "--connection", "x", "--all-connections"])
    assert both.exit_code == 1
    assert "not both" in both.stderr
    empty = runner.invoke(app, ["webhooks", "plan", "--all-connections"])
    assert empty.exit_code == 1
    assert "no connections stored" in empty.stderr


def test_one_failing_connection_does_not_stop_the_others(
    env: redis.Redis,  # noqa: F811
    sandbox: RunningSandbox,
) -> None:
    """A connection whose key Cal.com refuses is reported; the other is applied; exit 1."""
    good = add_connection("globex", SECOND_API_KEY, SECOND_ORG_ID, sandbox.url)
    bad = add_connection("revoked", "cal_test_not_a_key", SECOND_ORG_ID, sandbox.url)
    result = runner.invoke(app, ["webhooks", "apply", "--all-connections", "--json"])
    assert result.exit_code == 1, result.stdout + result.stderr
    outcomes = {o["connection"]: o for o in parsed(result.stdout)}
    assert "result" in outcomes[good]
    assert "error" in outcomes[bad]
    assert len(sandbox.store.webhooks) == 1
