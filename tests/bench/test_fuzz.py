"""bench/fuzz.py, short: 300 seeded hostile requests at a real intake and its MCP endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fuzz import run

pytestmark = pytest.mark.slow


async def test_three_hundred_hostile_requests_get_no_5xx(tmp_path: Path) -> None:
    result = await run(300, seed=14, workdir=tmp_path, concurrency=4)

    assert result.requests == 300
    assert result.server_errors == 0, (tmp_path / "fuzz-5xx.jsonl").read_text()
    assert result.unhandled_error_lines == 0
    assert result.by_status["connection_closed"] == 0
    assert result.by_status["timeout"] == 0
    # Both endpoints were reached and refused what they should.
    assert result.by_family["intake.bad_signature"]["401"] > 0
    assert result.by_family["intake.oversized"]["413"] > 0
    assert result.by_family["mcp.auth"]["401"] > 0
    assert result.by_status["202"] > 0
