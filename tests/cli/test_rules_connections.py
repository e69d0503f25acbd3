"""``calhooks rules check`` checks the connection and tenant names a rules file uses against
the connection store when it can read it, and says so when it cannot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from calhooks.service.calcom.client import Credentials
from calhooks.service.cli.main import app
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.core.settings import get_settings
from tests.rules.helpers import EXAMPLES

runner = CliRunner()
LIST_USERS = "cal_organizations_users_controller_get_organizations_users"

RULES = f"""
connections:
  globex:
    env: {{domain: globex.example}}
rules:
  - name: for-some
    on: BOOKING_CREATED
    connections: [CONNECTION]
    tenants: [TENANT]
    steps:
      - tool: {LIST_USERS}
"""


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis) -> Iterator[str]:
    """A store with Acme and Globex in the default tenant and Acme Labs in ``agency``."""
    secret = generate_key()

    async def seed() -> None:
        redis = aioredis.Redis.from_url(redis_server.url)
        await redis.flushall()
        store = ConnectionStore(redis, SecretBox(secret))
        for org_id, (name, tenant) in enumerate(
            (("acme", "default"), ("globex", "default"), ("acme-labs", "agency")), start=1
        ):
            credentials = Credentials(api_key=f"cal_{name}")
            await store.add(name, credentials, tenant=tenant, org_id=org_id)
        await redis.aclose()

    asyncio.run(seed())
    for name in ("CALHOOKS_ORG_ID", "CALHOOKS_RULES_ENV", "CALHOOKS_RULES_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALHOOKS_REDIS_URL", redis_server.url)
    monkeypatch.setenv("CALHOOKS_ENCRYPTION_KEY", secret)
    get_settings.cache_clear()
    yield secret
    get_settings.cache_clear()


def rules_file(tmp_path: Path, connection: str = "acme", tenant: str = "agency") -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("CONNECTION", connection).replace("TENANT", tenant))
    return path


def test_names_of_stored_connections_and_tenants_pass(key: str, tmp_path: Path) -> None:
    path = rules_file(tmp_path)
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1] == "connection names: checked against 3 stored connections"
    as_json = runner.invoke(app, ["rules", "check", str(path), "--json"])
    assert json.loads(as_json.stdout)["connection_names"] == (
        "checked against 3 stored connections"
    )


def test_a_misspelt_connection_or_tenant_is_a_problem_with_a_suggestion(
    key: str, tmp_path: Path
) -> None:
    path = rules_file(tmp_path, connection="globx", tenant="agncy")
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "2 problems in the rules",
        f"  {path}:8: rule 'for-some': connections: no connection is named 'globx'"
        " (did you mean 'globex'?)",
        f"  {path}:9: rule 'for-some': tenants: no connection belongs to tenant 'agncy'"
        " (did you mean 'agency'?)",
    ]


def test_an_unknown_name_in_the_connections_map_is_a_problem(key: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_file(tmp_path).read_text().replace("globex:", "globe:"))
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:3: connections: no connection is named 'globe'" in result.stderr


def test_names_are_not_checked_without_the_store(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreachable Redis, or no encryption key: the file is still checked, the names not."""
    path = rules_file(tmp_path, connection="globx")
    monkeypatch.setenv("CALHOOKS_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    unreachable = runner.invoke(app, ["rules", "check", str(path)])
    assert unreachable.exit_code == 0, unreachable.stderr
    assert unreachable.stdout.splitlines()[1].startswith(
        "connection names: not checked (the connection store in Redis is unreachable"
    )
    monkeypatch.delenv("CALHOOKS_ENCRYPTION_KEY")
    get_settings.cache_clear()
    keyless = runner.invoke(app, ["rules", "check", str(path)])
    assert keyless.exit_code == 0, keyless.stderr
    assert keyless.stdout.splitlines()[1] == (
        "connection names: not checked (CALHOOKS_ENCRYPTION_KEY is not set: no connection store)"
    )


def test_a_file_naming_no_connection_says_nothing_of_them(key: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"rules:\n  - name: r\n    on: BOOKING_CREATED\n    steps:\n      - tool: {LIST_USERS}\n"
    )
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1


def test_a_dry_run_as_a_connection_uses_its_rules_env_and_org_id(key: str, tmp_path: Path) -> None:
    path = rules_file(tmp_path, connection="globex")
    event = str(EXAMPLES / "events" / "time-off-booking-created.json")
    as_globex = runner.invoke(
        app, ["rules", "test", str(path), "--event", event, "--connection", "globex"]
    )
    assert as_globex.exit_code == 0, as_globex.stderr
    assert "rule for-some: matches" in as_globex.stdout
    assert "      orgId: 2" in as_globex.stdout
    as_acme = runner.invoke(
        app, ["rules", "test", str(path), "--event", event, "--connection", "acme"]
    )
    assert "rule for-some: no match (runs for connection globex or tenant agency)" in as_acme.stdout
    as_labs = runner.invoke(
        app,
        [
            "rules",
            "test",
            str(path),
            "--event",
            event,
            "--connection",
            "acme-labs",
            "--tenant",
            "agency",
        ],
    )
    assert "      orgId: 3" in as_labs.stdout
    unknown = runner.invoke(
        app, ["rules", "test", str(path), "--event", event, "--connection", "nope"]
    )
    assert unknown.exit_code == 1
    assert "no connection 'nope' (a PCID, or a name in tenant 'default')" in unknown.stderr
