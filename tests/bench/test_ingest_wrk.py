"""bench/ingest.py reads wrk's report robustly: the percentiles from their own block only."""

from __future__ import annotations

import pytest

from bench.ingest import parse_wrk

# wrk 4.2 with --latency; the thread stats' "+/- Stdev" column ends in "85.50%", which a
# loose `50%\s+(\S+)` took for the median, followed by the next line's "Req/Sec".
REPORT = """\
Running 10s test @ http://127.0.0.1:8080/webhooks/cal
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms    1.12ms  40.12ms   85.50%
    Req/Sec    14.01k     1.02k   16.20k    99.00%
  Latency Distribution
     50%    2.10ms
     75%    2.80ms
     90%    3.51ms
     99%    6.02ms
  278765 requests in 10.00s, 32.43MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  27870.12
Transfer/sec:      3.24MB
POOL_WRAPS 2
"""


def test_the_percentiles_come_from_the_latency_distribution() -> None:
    result = parse_wrk(REPORT)
    assert (result.p50_ms, result.p99_ms) == (2.10, 6.02)
    assert result.requests_per_second == 27870.12
    assert result.requests == 278765
    assert result.errors == "3 non-2xx"
    assert result.wraps == 2


def test_units_are_converted_to_milliseconds() -> None:
    report = REPORT.replace("2.10ms", "950.00us").replace("6.02ms", "1.20s")
    result = parse_wrk(report)
    assert (result.p50_ms, result.p99_ms) == pytest.approx((0.95, 1200.0))


def test_a_report_without_the_distribution_says_so() -> None:
    without = REPORT.split("  Latency Distribution")[0] + "Requests/sec:  1.0\nPOOL_WRAPS 0\n"
    with pytest.raises(ValueError, match="latency distribution"):
        parse_wrk(without)
