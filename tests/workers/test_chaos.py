"""The chaos run, short: the same scenario as ``bench/chaos.py`` (tests/workers/chaos.py) with
fewer bookings, a shorter Redis outage and faster timings, within about a minute."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workers.chaos import Plan, run

pytestmark = pytest.mark.slow

SHORT = Plan(
    bookings=16,
    cancel_every=4,
    emit_seconds=12.0,
    redis_down=4.0,
    fault_window=2.0,
    drain_deadline=90.0,
    settings={
        "api_timeout": "2",
        "worker_retry_base_delay": "0.5",
        "worker_retry_max_delay": "2",
        "worker_rate_limit_per_minute": "0",
    },
)


async def test_nothing_is_lost_doubled_or_leaked_through_crashes_outages_and_faults(
    tmp_path: Path,
) -> None:
    report = await run(SHORT, tmp_path / "chaos")
    summary = report.to_dict()
    assert report.undelivered_bookings == 0, summary
    assert (report.lost, report.doubled, report.stray) == (0, 0, 0), summary
    assert report.unexpected_exits == 0, summary
    assert report.secret_hits == {"webhook_secret": 0, "api_key": 0}, summary
    assert report.drained, summary
    assert report.exits["intake-1"] == 0
    assert report.exits["intake-2"] == 0
    assert report.faulted_calls > 0  # the fault windows did hit the workers' calls
    # One create per booking at most (a cancellation that overtook its creation skips it).
    assert report.bookings - report.cancelled <= report.creates_201 <= report.bookings
