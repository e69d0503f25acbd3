"""Cal.com's request throttling: a fixed window per credential, then a block.

Cal.com allows 120 requests per 60 s window to an API key (500 to a platform OAuth client),
counts every request, and once a caller goes over, blocks it for the block duration (60 s
by default). Every answer carries ``X-RateLimit-Limit-Default``,
``X-RateLimit-Remaining-Default`` and ``X-RateLimit-Reset-Default`` (whole seconds until the
window resets, or until the block ends); past the limit the answer is 429
``ThrottlerException`` with no ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    """How the sandbox throttles; ``enabled=False`` lets everything through, headerless."""

    limit: int = 120
    window: float = 60.0
    #: Seconds a caller stays blocked after going over; ``None``: one window.
    block: float | None = None
    #: Requests per window for platform OAuth clients.
    client_limit: int = 500
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.limit < 1 or self.client_limit < 1:
            raise ValueError("rate limits must be at least 1 request")
        if self.window <= 0 or (self.block is not None and self.block < 0):
            raise ValueError("window must be positive and block not negative")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit-Default": str(self.limit),
            "X-RateLimit-Remaining-Default": str(self.remaining),
            "X-RateLimit-Reset-Default": str(self.reset),
        }


@dataclass(slots=True)
class _Window:
    started: float
    hits: int = 0
    blocked_until: float = 0.0


class RateLimiter:
    """Counts requests per tracker (a credential id, or the client address when anonymous)."""

    def __init__(self, config: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def configure(self, config: RateLimit) -> None:
        self.config = config
        self._windows.clear()

    def reset(self) -> None:
        self._windows.clear()

    def hit(self, tracker: str, *, platform_client: bool = False) -> Decision | None:
        """Count one request; ``None`` when throttling is off."""
        config = self.config
        if not config.enabled:
            return None
        limit = config.client_limit if platform_client else config.limit
        now = self._clock()
        window = self._windows.get(tracker)
        if window is not None and window.blocked_until > now:
            return Decision(False, limit, 0, math.ceil(window.blocked_until - now))
        if window is None or window.blocked_until or now >= window.started + config.window:
            window = self._windows[tracker] = _Window(now)  # first call, new window, or block over
        window.hits += 1
        if window.hits > limit:
            block = config.window if config.block is None else config.block
            window.blocked_until = now + block
            return Decision(False, limit, 0, math.ceil(block))
        reset = math.ceil(window.started + config.window - now)
        return Decision(True, limit, limit - window.hits, reset)
