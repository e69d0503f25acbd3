"""Back-off: ceilings double up to the cap; full or equal jitter below them."""

from __future__ import annotations

from calhooks.service.calcom.backoff import Backoff


def test_ceilings_double_to_the_cap() -> None:
    backoff = Backoff(base=1, cap=10)
    assert [backoff.ceiling(a) for a in range(6)] == [1, 2, 4, 8, 10, 10]
    assert backoff.ceiling(10_000) == 10  # no overflow for absurd attempts


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    backoff = Backoff(base=1, cap=10)
    assert backoff.delay(3, rng=lambda: 0.0) == 0
    assert backoff.delay(3, rng=lambda: 1.0) == 8


def test_equal_jitter_waits_at_least_half_the_ceiling() -> None:
    backoff = Backoff(base=1, cap=10, jitter="equal")
    assert backoff.delay(3, rng=lambda: 0.0) == 4
    assert backoff.delay(3, rng=lambda: 1.0) == 8
