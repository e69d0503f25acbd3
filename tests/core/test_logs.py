"""Logging: one processor chain, JSON out, and no API key or secret ever written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from calhooks.service.core.logs import (
    REDACTED,
    configure_from_settings,
    configure_logging,
    register_secret,
    settings_secrets,
)
from calhooks.service.core.secretbox import generate_key
from calhooks.service.core.settings import get_settings


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer, secrets=["whsec-very-secret-value"])
    yield buffer
    structlog.contextvars.clear_contextvars()
    configure_logging("warning", "console")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_with_bound_context(stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(event_id="ev1", trigger="BOOKING_CREATED")
    structlog.get_logger("t").info("intake.accepted", rule="r1")
    [line] = lines(stream)
    assert line["event"] == "intake.accepted"
    assert (line["event_id"], line["trigger"], line["rule"]) == ("ev1", "BOOKING_CREATED", "r1")
    assert line["level"] == "info"
    assert "timestamp" in line


def test_api_keys_are_redacted_everywhere(stream: io.StringIO) -> None:
    """API keys vanish whether under a secret-looking key, inside text, or nested."""
    log = structlog.get_logger("t")
    log.info(
        "calling",
        api_key="cal_live_abcdef0123456789",
        note="header was Bearer cal_live_abcdef0123456789",
        headers={"Authorization": "Bearer cal_test_zzzzzz999999", "Accept": "json"},
        webhook_secret="whsec-very-secret-value",
        echoed="the secret is whsec-very-secret-value!",
    )
    text = stream.getvalue()
    assert "cal_live_abcdef" not in text
    assert "cal_test_zzzz" not in text
    assert "whsec-very-secret-value" not in text
    [line] = lines(stream)
    assert line["api_key"] == REDACTED
    assert line["note"] == f"header was Bearer {REDACTED}"
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "json"}


def test_stdlib_records_share_the_chain(stream: io.StringIO) -> None:
    """uvicorn/arq log through the stdlib; their lines are JSON and redacted too."""
    register_secret("stdlib-secret-123")
    logging.getLogger("uvicorn.error").warning("oops stdlib-secret-123 cal_live_1234567890")
    [line] = lines(stream)
    assert line["event"] == f"oops {REDACTED} {REDACTED}"
    assert line["logger"] == "uvicorn.error"


class Holder:
    """An object whose repr shows what it holds (as renderers would print it)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Holder({self.value})"


NEW_KEY, OLD_KEY = generate_key(), generate_key()
SECRET_VALUES = [
    "calkey-planted-0001",
    "client-secret-planted-0002",
    NEW_KEY,
    OLD_KEY,
    "redis-pass-planted-0005",
    "mcp-token-planted-0006",
    "mcp-acme-planted-0007",
    "mcp-globex-planted-0008",
    "whsec-planted-0009",
    "whsec-planted-0010",
]
PLANTED = {
    "CALHOOKS_API_KEY": SECRET_VALUES[0],
    "CALHOOKS_CLIENT_SECRET": SECRET_VALUES[1],
    "CALHOOKS_ENCRYPTION_KEY": f"{NEW_KEY},{OLD_KEY}",
    "CALHOOKS_REDIS_URL": "redis://worker:redis-pass-planted-0005@redis.internal:6379/0",
    "CALHOOKS_MCP_TOKEN": "mcp-token-planted-0006",
    "CALHOOKS_MCP_TOKENS": "acme:mcp-acme-planted-0007,globex:mcp-globex-planted-0008",
    "CALHOOKS_WEBHOOK_SECRETS": "whsec-planted-0009;expires=2031-01-01T00:00:00Z,"
    "whsec-planted-0010",
}


def test_every_secret_setting_is_registered_and_masked_in_any_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through configure_from_settings: strings, bytes, objects, nested - none shows."""
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    assert sorted(settings_secrets(get_settings())) == sorted(SECRET_VALUES)
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stderr", buffer)
    try:
        configure_from_settings()
        log = structlog.get_logger("t")
        for secret in SECRET_VALUES:
            log.info(
                "planted",
                text=f"value {secret} here",
                raw=secret.encode(),
                obj=Holder(secret),
                nested={"deep": [Holder(secret), (secret.encode(),)]},
                items={secret},
            )
            logging.getLogger("stdlib").warning("stdlib %s", secret)
    finally:
        get_settings.cache_clear()
        configure_logging("warning", "console")
    text = buffer.getvalue()
    assert text.count("planted") >= len(SECRET_VALUES)
    for secret in SECRET_VALUES:
        assert secret not in text, secret


def test_objects_without_secrets_are_left_to_the_renderer(stream: io.StringIO) -> None:
    structlog.get_logger("t").info("plain", obj=Holder("harmless"), raw=b"bytes")
    [line] = lines(stream)
    assert (line["obj"], line["raw"]) == ("Holder(harmless)", "b'bytes'")


def test_hundreds_of_registered_secrets_are_all_masked() -> None:
    """Every connection's webhook secret is registered: each is masked wherever it appears,
    the longer of two overlapping ones whole, regex characters literally."""
    import secrets as random_secrets

    from calhooks.service.core.logs import REDACTED, register_secret, scrub_text

    many = ["whsec_" + random_secrets.token_urlsafe(32) for _ in range(300)]
    for secret in many:
        register_secret(secret)
    register_secret("prefix-secret")
    register_secret("prefix-secret-longer")
    register_secret("a.b*c+(d)")
    line = f"x {many[0]} y {many[-1]}z prefix-secret-longer a.b*c+(d) aXbbc+(d)"
    assert scrub_text(line) == (f"x {REDACTED} y {REDACTED}z {REDACTED} {REDACTED} aXbbc+(d)")
    assert scrub_text("nothing to hide") == "nothing to hide"
