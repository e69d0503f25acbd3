"""When a failed rule is tried again, and when it is given up on.

arq re-runs a job only when it raises ``arq.Retry`` (or is cancelled); any other exception
fails it for good. ``process_event`` therefore classifies every failure itself:

* **transient** - Cal.com answered 429, 408 or 5xx, could not be reached, or Redis hiccuped:
  the event is retried (``arq.Retry(defer=...)``) up to ``CALHOOKS_WORKER_MAX_TRIES`` attempts;
* **permanent** - anything else (a 4xx validation error, a rule that fails to evaluate, a bug):
  retrying would fail the same way, so the rule goes to the dead-letter queue at once.

Delays grow exponentially with "equal jitter" - half of the ceiling fixed, half random - so
retries after one outage spread out while each retry still waits at least half its ceiling.
With the defaults (10 s base, 1 h cap, 16 tries) a rule is retried for between about 3.7 and
7.4 hours before it is dead-lettered: a Cal.com outage drains into retries, not into the
dead-letter queue. When Cal.com says how long to wait (``Retry-After`` or its rate-limit
reset, already parsed into ``CalcomError.retry_after`` by the client) that wait is used
instead, plus up to a second of jitter so the workers do not all return at the same instant.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

import redis.exceptions

from calhooks.service.calcom.backoff import Backoff, server_wait
from calhooks.service.calcom.errors import CalcomError, CalcomTransportError

_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    CalcomTransportError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    asyncio.TimeoutError,
)
_SERVER_WAIT_JITTER = 1.0


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed where this attempt failed."""
    if isinstance(exc, CalcomError):
        return exc.status in _TRANSIENT_STATUSES or exc.status >= 500
    return isinstance(exc, _TRANSIENT_TYPES)


def asked_wait(exc: BaseException) -> float | None:
    """Seconds Cal.com asked us to wait before trying again, if it said."""
    if not isinstance(exc, CalcomError):
        return None
    if exc.retry_after is not None:
        return exc.retry_after
    return server_wait(exc.headers, throttled=exc.status == 429)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a rule gets, and how long to wait before each new one."""

    max_tries: int = 16
    base_delay: float = 10.0
    max_delay: float = 3600.0

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.base_delay, self.max_delay, jitter="equal")

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1-based)."""
        return self.backoff.ceiling(attempt - 1)

    def delay(
        self,
        attempt: int,
        exc: BaseException | None = None,
        rng: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed attempt ``attempt`` before the next one."""
        asked = asked_wait(exc) if exc is not None else None
        if asked is not None:
            return asked + rng() * _SERVER_WAIT_JITTER
        return self.backoff.delay(attempt - 1, rng)

    def gives_up_after(self, attempt: int) -> bool:
        """Whether a transient failure at attempt ``attempt`` is the last one allowed."""
        return attempt >= self.max_tries


class Defer(Exception):
    """Not a failure: run this event again in ``delay`` seconds without counting an attempt.

    Raised when the event must wait for something outside it (its booking's earlier events,
    the shared rate limit) longer than it should hold a worker slot.
    """

    def __init__(self, delay: float, reason: str) -> None:
        self.delay = max(0.0, delay)
        self.reason = reason
        super().__init__(f"deferred {self.delay:.3f}s: {reason}")
