"""Settings: env prefix, defaults, secrets hidden, and the README table kept in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from calhooks.service.core.settings import Settings, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


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


def test_readme_documents_every_variable() -> None:
    """The README's settings table is exactly `python -m calhooks.service.core.settings` output."""
    text = README.read_text()
    match = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert match, "README lacks the settings table markers"
    assert match.group(1).strip() == settings_table().strip(), (
        "README settings table is stale: run `python -m calhooks.service.core.settings`, paste it"
    )
