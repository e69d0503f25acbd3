"""Settings: env prefix, defaults, secrets hidden, and the docs' table generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from calhooks.service.core.settings import Settings, settings_table
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
