"""Logging: one processor chain, JSON out, and no API key or secret ever written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from calhooks.service.core.logs import REDACTED, configure_logging, register_secret


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
