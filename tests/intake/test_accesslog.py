"""The per-delivery log line: the standard chain's JSON on structlog's fast path; else structlog."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from calhooks.service.core.logs import REDACTED, configure_logging, register_secret
from calhooks.service.intake.accesslog import AccessLog


def only_our_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root's handlers as in a served process: ours alone, without pytest's capture handlers.

    Called inside the test: pytest adds its handlers for the test's call phase.
    """
    root = logging.getLogger()
    ours = [
        h for h in root.handlers if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    ]
    monkeypatch.setattr(root, "handlers", ours)


@pytest.fixture
def json_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    yield buffer
    structlog.contextvars.clear_contextvars()
    configure_logging("warning", "console")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_match_the_standard_chain(
    json_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same keys as a structlog line through the standard chain; written in order."""
    only_our_handler(monkeypatch)
    log = AccessLog()
    assert log.fast
    structlog.contextvars.bind_contextvars(pod="web-0")
    structlog.get_logger("calhooks.intake").info("delivery", outcome="reference")
    reference = lines(json_stream)[0]
    log.log("info", "delivery", outcome="accepted", event_id="e1")
    log.log("warning", "delivery", outcome="bad_signature")
    first, second = lines(json_stream)[1:]
    assert set(first) == set(reference) | {"event_id"}
    assert (first["outcome"], first["level"], first["pod"]) == ("accepted", "info", "web-0")
    assert (second["outcome"], second["level"]) == ("bad_signature", "warning")
    assert str(first["timestamp"]).endswith("Z")


def test_levels_below_the_configured_one_are_dropped(
    json_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CALHOOKS_LOG_LEVEL=warning, info lines are not written."""
    configure_logging("warning", "json", stream=json_stream)
    only_our_handler(monkeypatch)
    log = AccessLog()
    log.log("info", "delivery", outcome="accepted")
    log.log("error", "delivery", outcome="unavailable")
    assert [line["outcome"] for line in lines(json_stream)] == ["unavailable"]


def test_other_setups_go_through_structlog() -> None:
    """A console or captured set-up gets the lines through structlog, unchanged."""
    configure_logging("info", "console", stream=io.StringIO())
    log = AccessLog()
    assert not log.fast
    with capture_logs() as captured:
        log.log("info", "delivery", outcome="accepted")
    assert captured == [{"event": "delivery", "outcome": "accepted", "log_level": "info"}]


class Holder:
    def __init__(self, value: str) -> None:
        self.value = value

    def __str__(self) -> str:
        return f"Holder({self.value})"


async def test_the_fast_path_redacts_like_the_standard_chain(
    json_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered secrets and API keys in any value, secret-looking keys: all masked."""
    only_our_handler(monkeypatch)
    register_secret("whsec-fast-path-planted-1")
    log = AccessLog()
    assert log.fast
    structlog.contextvars.bind_contextvars(token="bound-token-planted-2")
    log.log(
        "info",
        "delivery",
        note="signed with whsec-fast-path-planted-1",
        obj=Holder("whsec-fast-path-planted-1"),
        header="Bearer cal_live_fastpath0000003",
        authorization="Basic planted-4",
    )
    await asyncio.sleep(0)
    text = json_stream.getvalue()
    for planted in (
        "whsec-fast-path-planted-1",
        "bound-token-planted-2",
        "cal_live_fast",
        "planted-4",
    ):
        assert planted not in text, planted
    [line] = lines(json_stream)
    assert (line["token"], line["authorization"]) == (REDACTED, REDACTED)
    assert line["note"] == f"signed with {REDACTED}"


def test_a_stream_with_a_byte_buffer_gets_whole_lines_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On stderr or a file the fast path writes bytes to the buffer; lines stay whole, in order,
    among the standard chain's, and a set (not JSON) is written as a list."""
    path = tmp_path / "intake.log"
    with path.open("a", encoding="utf-8") as stream:
        configure_logging("info", "json", stream=stream)
        only_our_handler(monkeypatch)
        log = AccessLog()
        assert log.fast
        structlog.get_logger("calhooks.web").info("before")
        log.log("info", "delivery", outcome="accepted", odd={1, 2})
        structlog.get_logger("calhooks.web").info("after")
    configure_logging("warning", "console")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [record["event"] for record in records] == ["before", "delivery", "after"]
    assert (records[1]["logger"], sorted(records[1]["odd"])) == ("calhooks.intake", [1, 2])
