"""Settings: env prefix, defaults, secrets hidden, and the docs' table generated from them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calhooks.service.core.secretbox import generate_key
from calhooks.service.core.settings import (
    Settings,
    SettingsError,
    load_settings,
    settings_table,
)
from scripts.docs_hooks import fill

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.api_url == "https://api.cal.com"
    assert settings.api_key is None
    assert settings.org_id is None


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALHOOKS_API_KEY", "cal_live_0123456789")
    monkeypatch.setenv("CALHOOKS_ORG_ID", "42")
    monkeypatch.setenv("CALHOOKS_API_RETRIES", "5")
    settings = Settings(_env_file=None)
    assert settings.org_id == 42
    assert settings.api_retries == 5
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "cal_live_0123456789"
    assert "cal_live_0123456789" not in repr(settings)


def test_invalid_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALHOOKS_API_TIMEOUT", "-1")
    with pytest.raises(ValueError, match="api_timeout"):
        Settings(_env_file=None)


def test_the_docs_show_every_variable() -> None:
    """The Configuration page gets its table from the settings when the site is built."""
    page = (DOCS / "configuration.md").read_text()
    assert "<!-- settings-table -->" in page, "docs/configuration.md lacks the table marker"
    built = fill(page)
    assert settings_table() in built
    for name in Settings.model_fields:
        assert f"`CALHOOKS_{name.upper()}`" in built


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CALHOOKS_ORG_ID", "abc", "CALHOOKS_ORG_ID: Input should be a valid integer"),
        ("CALHOOKS_API_URL", "api.cal.com", "CALHOOKS_API_URL: must be an http(s)://host"),
        ("CALHOOKS_API_URL", "https://user:pw@cal.example", "must not carry credentials"),
        ("CALHOOKS_PUBLIC_URL", "hooks.example.com", "CALHOOKS_PUBLIC_URL: must be an http(s)"),
        ("CALHOOKS_REDIS_URL", "localhost:6379", "CALHOOKS_REDIS_URL: must be a redis://"),
        ("CALHOOKS_ENCRYPTION_KEY", "not-a-key", "CALHOOKS_ENCRYPTION_KEY: is not a Fernet key"),
        ("CALHOOKS_PORT", "99999", "CALHOOKS_PORT: Input should be less than or equal to 65535"),
        ("CALHOOKS_RULES_ENV", "{not json", "CALHOOKS_RULES_ENV: is not valid JSON"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    if variable in ("CALHOOKS_ENCRYPTION_KEY", "CALHOOKS_REDIS_URL"):
        assert value not in text  # a secret's value is never repeated


def test_every_bad_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALHOOKS_ORG_ID", "abc")
    monkeypatch.setenv("CALHOOKS_API_URL", "api.cal.com")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).count("CALHOOKS_") == 2


def test_valid_urls_and_keys_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALHOOKS_API_URL", "http://127.0.0.1:8788")
    monkeypatch.setenv("CALHOOKS_REDIS_URL", "unix:///tmp/redis.sock")
    monkeypatch.setenv("CALHOOKS_ENCRYPTION_KEY", f"{generate_key()},{generate_key()}")
    assert load_settings().api_url == "http://127.0.0.1:8788"


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "calhooks.service"],
        ["-m", "calhooks.service", "serve"],
        ["-m", "calhooks.service", "worker"],
        ["-m", "calhooks.service", "connections", "list"],
        ["-m", "calhooks.service", "dlq", "list"],
        ["-m", "calhooks.service", "events", "show", "abc"],
        ["-m", "calhooks.service", "webhooks", "plan"],
        ["-m", "calhooks.service", "mcp", "serve"],
        [
            "-m",
            "calhooks.service",
            "tools",
            "call",
            "cal_organizations_users_controller_get_organizations_users",
        ],
    ],
    ids=lambda command: " ".join(command[2:]) or "python -m calhooks.service",
)
def test_commands_end_with_one_line_and_status_1(command: list[str], tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CALHOOKS_ORG_ID": "abc",
        "CALHOOKS_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, *command], env=env, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode().splitlines() == [
        "error: CALHOOKS_ORG_ID: Input should be a valid integer, unable to parse string as "
        "an integer (got 'abc')"
    ]
