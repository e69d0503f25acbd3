"""`calhooks connections` and `calhooks mcp token`: store, list, remove and test connections."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import redis
from typer.testing import CliRunner

from calhooks.service.cli.main import app
from calhooks.service.connections.store import RECORDS_KEY
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.secretbox import generate_key
from calhooks.service.core.settings import get_settings
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID, SECOND_API_KEY
from tests.sandbox.server import RunningSandbox

runner = CliRunner()
PCID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis, sandbox: RunningSandbox
) -> Iterator[redis.Redis]:
    """The CLI's environment: the suite's Redis (flushed), a fresh key, the sandbox."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    monkeypatch.setenv("CALHOOKS_REDIS_URL", redis_server.url)
    monkeypatch.setenv("CALHOOKS_ENCRYPTION_KEY", generate_key())
    monkeypatch.setenv("CALHOOKS_API_URL", sandbox.url)
    monkeypatch.setenv("CALHOOKS_API_RETRIES", "0")
    monkeypatch.delenv("CALHOOKS_API_KEY", raising=False)
    monkeypatch.delenv("CALHOOKS_ORG_ID", raising=False)
    get_settings.cache_clear()
    yield client
    get_settings.cache_clear()
    client.close()


def add(*args: str, input: str | None = None) -> str:
    result = runner.invoke(app, ["connections", "add", *args], input=input)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_add_prints_only_the_pcid_and_list_never_shows_the_key(env: redis.Redis) -> None:
    """`add` prints a PCID (scriptable); `list` shows it, the name and org, not the key."""
    pcid = add("acme", "--api-key", "-", "--org-id", str(SANDBOX_ORG_ID), input=SANDBOX_API_KEY)
    assert PCID_SHAPE.fullmatch(pcid)
    listed = runner.invoke(app, ["connections", "list"])
    assert listed.exit_code == 0
    assert pcid in listed.stdout
    assert "acme" in listed.stdout
    assert SANDBOX_API_KEY not in listed.stdout + listed.stderr
    as_json = json.loads(runner.invoke(app, ["connections", "list", "--json"]).stdout)
    assert as_json == [
        {
            "pcid": pcid,
            "name": "acme",
            "tenant": "default",
            "auth": "api_key",
            "org_id": SANDBOX_ORG_ID,
            "base_url": None,
            "created_at": as_json[0]["created_at"],
        }
    ]
    assert SANDBOX_API_KEY.encode() not in b"".join(env.hvals(RECORDS_KEY))  # type: ignore[arg-type]


def test_api_key_from_stdin_and_test_reaches_calcom(
    env: redis.Redis, sandbox: RunningSandbox
) -> None:
    """`--api-key -` reads the key from stdin; `test` lists one attribute with it."""
    pcid = add("acme", "--api-key", "-", "--org-id", "1", input=SANDBOX_API_KEY + "\n")
    by_name = runner.invoke(app, ["connections", "test", "acme"])
    assert by_name.exit_code == 0, by_name.stderr
    assert by_name.stdout.startswith(f"ok: 'acme' reached Cal.com at {sandbox.url} as org 1")
    by_pcid = runner.invoke(app, ["connections", "test", pcid])
    assert by_pcid.exit_code == 0
    seen = [(r.credential, r.query) for r in sandbox.requests()]
    assert seen == [("key-acme-admin", [("take", "1")])] * 2


def test_test_reports_a_key_cal_com_refuses(env: redis.Redis) -> None:
    """A key of another org fails `test` with Cal.com's status, not a traceback."""
    add("wrong-org", "--api-key", "-", "--org-id", "1", input=SECOND_API_KEY)
    result = runner.invoke(app, ["connections", "test", "wrong-org"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 'wrong-org' failed:")
    assert "403" in result.stderr
    assert SECOND_API_KEY not in result.stderr


def test_names_are_unique_per_tenant_and_remove_frees_them(env: redis.Redis) -> None:
    """A duplicate name is refused; `remove` by name deletes it; unknown refs fail."""
    add("acme", "--api-key", "-", input=SANDBOX_API_KEY)
    duplicate = runner.invoke(
        app, ["connections", "add", "acme", "--api-key", "-"], input=SANDBOX_API_KEY
    )
    assert duplicate.exit_code == 1
    assert "already has a connection named 'acme'" in duplicate.stderr
    add("acme", "--api-key", "-", "--tenant", "blue", input=SANDBOX_API_KEY)
    removed = runner.invoke(app, ["connections", "remove", "acme"])
    assert removed.exit_code == 0
    remaining = json.loads(runner.invoke(app, ["connections", "list", "--json"]).stdout)
    assert [(c["tenant"], c["name"]) for c in remaining] == [("blue", "acme")]
    gone = runner.invoke(app, ["connections", "remove", "acme"])
    assert gone.exit_code == 1
    assert "no connection 'acme' (tenant default)" in gone.stderr


def test_without_an_encryption_key_nothing_is_stored(
    env: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No CALHOOKS_ENCRYPTION_KEY: a one-line error saying how to make one."""
    monkeypatch.delenv("CALHOOKS_ENCRYPTION_KEY")
    get_settings.cache_clear()
    result = runner.invoke(
        app, ["connections", "add", "acme", "--api-key", "-"], input=SANDBOX_API_KEY
    )
    assert result.exit_code == 1
    assert "calhooks keygen" in result.stderr
    assert env.exists(RECORDS_KEY) == 0


def test_mcp_token_prints_a_long_random_token() -> None:
    """`calhooks mcp token` makes a URL-safe token of 43 characters, new each time."""
    first = runner.invoke(app, ["mcp", "token"]).stdout.strip()
    second = runner.invoke(app, ["mcp", "token"]).stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", first)
    assert first != second


@pytest.mark.parametrize("option", ["--api-key", "--client-secret"])
def test_a_key_in_argv_is_refused_and_nothing_is_stored(env: redis.Redis, option: str) -> None:
    args = ["connections", "add", "acme", option, SANDBOX_API_KEY]
    if option == "--client-secret":
        args += ["--client-id", "client-1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {option} takes '-' (read it from stdin)")
    assert "`ps`" in result.stderr
    assert SANDBOX_API_KEY not in result.stderr
    assert env.exists(RECORDS_KEY) == 0


def test_api_key_from_a_named_environment_variable(
    env: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_CAL_KEY", SANDBOX_API_KEY)
    add("acme", "--api-key-env", "ACME_CAL_KEY", "--org-id", "1")
    tested = runner.invoke(app, ["connections", "test", "acme"])
    assert tested.exit_code == 0, tested.stderr
    missing = runner.invoke(app, ["connections", "add", "x", "--api-key-env", "NOPE_UNSET"])
    assert missing.exit_code == 1
    assert "environment variable NOPE_UNSET is not set" in missing.stderr


def test_client_secret_from_stdin(env: redis.Redis) -> None:
    add("platform", "--client-id", "client-1", "--client-secret", "-", input="s3cret-value\n")
    listed = json.loads(runner.invoke(app, ["connections", "list", "--json"]).stdout)
    assert [(c["name"], c["auth"]) for c in listed] == [("platform", "platform_client")]
    assert b"s3cret-value" not in b"".join(env.hvals(RECORDS_KEY))  # type: ignore[arg-type]


def test_migrate_reports_what_it_rewrote(env: redis.Redis) -> None:
    add("acme", "--api-key", "-", input=SANDBOX_API_KEY)
    result = runner.invoke(app, ["connections", "migrate"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "rewrote 0 connection(s) in the sealed-whole form"
