"""Which failures are retried, and how long the workers wait before each new try."""

from __future__ import annotations

import pytest
import redis.exceptions

from calhooks.service.calcom.errors import CalcomError, CalcomTransportError, ToolValidationError
from calhooks.workers.retries import Defer, RetryPolicy, asked_wait, is_transient


def cal_error(status: int, headers: dict[str, str] | None = None) -> CalcomError:
    return CalcomError(tool="t", status=status, code="X", message="m", headers=headers)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (cal_error(429), True),
        (cal_error(500), True),
        (cal_error(503), True),
        (cal_error(408), True),
        (cal_error(400), False),
        (cal_error(401), False),
        (cal_error(404), False),
        (cal_error(409), False),
        (CalcomTransportError("t", "ConnectError"), True),
        (redis.exceptions.ConnectionError("down"), True),
        (TimeoutError(), True),
        (ToolValidationError("t", []), False),
        (KeyError("bug"), False),
    ],
)
def test_transient_failures_are_told_from_permanent_ones(exc: Exception, transient: bool) -> None:
    """429, 408, 5xx and unreachable services retry; validation errors and bugs do not."""
    assert is_transient(exc) is transient


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    """Each delay lies between half its ceiling and the ceiling; ceilings double to the cap."""
    policy = RetryPolicy(max_tries=10, base_delay=10, max_delay=100)
    assert [policy.ceiling(a) for a in range(1, 7)] == [10, 20, 40, 80, 100, 100]
    assert policy.delay(3, rng=lambda: 0.0) == 20
    assert policy.delay(3, rng=lambda: 1.0) == 40


def test_defaults_spread_retries_over_hours() -> None:
    """With the default settings a rule keeps being retried for several hours."""
    policy = RetryPolicy()
    ceilings = [policy.ceiling(attempt) for attempt in range(1, policy.max_tries)]
    shortest, longest = sum(ceilings) / 2, sum(ceilings)
    assert 3 * 3600 < shortest < longest < 8 * 3600


def test_cal_com_asked_wait_wins_over_backoff() -> None:
    """Retry-After (or the rate-limit reset) is honoured, plus at most a second of jitter."""
    policy = RetryPolicy(base_delay=1000, max_delay=1000)
    throttled = cal_error(429, {"Retry-After": "7"})
    assert asked_wait(throttled) == 7
    assert policy.delay(1, throttled, rng=lambda: 0.5) == 7.5
    reset = cal_error(429, {"X-RateLimit-Remaining-Default": "0", "X-RateLimit-Reset-Default": "4"})
    assert policy.delay(1, reset, rng=lambda: 0.0) == 4
    told = cal_error(503)
    told.retry_after = 12.0
    assert policy.delay(1, told, rng=lambda: 0.0) == 12


def test_last_try_is_the_configured_one() -> None:
    """The policy gives up on the max_tries-th failed attempt, not before."""
    policy = RetryPolicy(max_tries=3)
    assert [policy.gives_up_after(a) for a in (1, 2, 3)] == [False, False, True]


def test_defer_never_goes_backwards() -> None:
    """A deferral carries a non-negative delay and its reason."""
    assert Defer(-1, "x").delay == 0
    assert "rate limit" in str(Defer(2, "rate limit"))
