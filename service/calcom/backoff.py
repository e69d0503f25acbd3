"""How long to wait before trying Cal.com again.

Two sources, the server's word first:

* ``server_wait(headers)`` - what Cal.com asks for: ``Retry-After`` (seconds or an HTTP
  date) or, when a ``X-RateLimit-Remaining-<name>`` header is at 0, the matching
  ``X-RateLimit-Reset-<name>``. Cal.com's ``CustomThrottlerGuard`` sets the reset to
  ``timeToBlockExpire || timeToExpire`` from its throttler storage, which NestJS's
  ``ThrottlerStorageRecord`` contract gives in seconds (rounded up), and sets no
  ``Retry-After``; values that look like epoch seconds or milliseconds are read as such in
  case a proxy in front rewrites them.
* ``Backoff.delay(attempt)`` - exponential back-off with full jitter
  (``uniform(0, min(cap, base * 2**attempt))``), so many clients retrying after one outage
  spread out instead of arriving together.

The client uses both for its short in-process retries; the workers use them for retries
spread over hours.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

_EPOCH_SECONDS = 1_000_000_000
_EPOCH_MILLISECONDS = 1_000_000_000_000


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off: the ceiling doubles from ``base`` to ``cap``, the wait is jittered.

    ``full`` jitter (anywhere up to the ceiling) spreads the client's quick in-process retries
    best; ``equal`` jitter (half the ceiling fixed, half random) is what the workers' long
    retries use, so each still waits at least half its ceiling.
    """

    base: float = 0.5
    cap: float = 30.0
    jitter: Literal["full", "equal"] = "full"

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt`` (0-based)."""
        return float(min(self.cap, self.base * 2.0 ** min(attempt, 62)))

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        ceiling = self.ceiling(attempt)
        if self.jitter == "equal":
            return ceiling / 2 + rng() * ceiling / 2
        return rng() * ceiling


def _seconds_from(value: str, now: float) -> float | None:
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError, IndexError):
            return None
    if number >= _EPOCH_MILLISECONDS:
        return max(0.0, number / 1000 - now)
    if number >= _EPOCH_SECONDS:
        return max(0.0, number - now)
    return max(0.0, number)


def rate_limit_state(headers: Mapping[str, str]) -> dict[str, tuple[int | None, float | None]]:
    """Cal.com's named limits: ``{name: (remaining, seconds_to_reset)}`` from the headers."""
    now = time.time()
    state: dict[str, tuple[int | None, float | None]] = {}
    lowered = {k.lower(): v for k, v in headers.items()}
    for key, value in lowered.items():
        for field in ("remaining", "reset"):
            prefix = f"x-ratelimit-{field}-"
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :]
            remaining, reset = state.get(name, (None, None))
            if field == "remaining":
                try:
                    remaining = int(float(value))
                except ValueError:
                    remaining = None
            else:
                reset = _seconds_from(value, now)
            state[name] = (remaining, reset)
    return state


def server_wait(headers: Mapping[str, str], *, throttled: bool = False) -> float | None:
    """Seconds Cal.com asks us to wait, or ``None`` if it asks nothing.

    ``throttled`` (a 429) makes every ``Reset`` count, not only those whose ``Remaining``
    is 0: Cal.com may block for the whole window after the limit is exceeded.
    """
    now = time.time()
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after" in lowered:
        wait = _seconds_from(lowered["retry-after"], now)
        if wait is not None:
            return wait
    waits = [
        reset
        for remaining, reset in rate_limit_state(lowered).values()
        if reset is not None and (throttled or remaining == 0)
    ]
    return max(waits) if waits else None
