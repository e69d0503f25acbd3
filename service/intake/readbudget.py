"""The bytes of request bodies the intake holds at once, across every connection.

Bodies are read before their signature can be checked, so without a bound a few thousand
slow connections sending 1 MiB each hold gigabytes. ``ReadBudget`` counts the bytes read and
not yet answered; a chunk that would pass the budget is refused and the endpoint answers 503
with ``Retry-After`` (``calhooks_intake_deliveries_total{outcome="overloaded"}``).

A quarter of the budget is kept for small bodies (declared ``Content-Length`` up to
``SMALL_BODY``, which Cal.com's deliveries are): a flood of large bodies can hold at most
three quarters, so ordinary deliveries still get through it. Its size comes from
``CALHOOKS_READ_BUDGET_BYTES`` (default: an eighth of the memory the process has, see
``calhooks.service.core.resources``).
"""

from __future__ import annotations

#: Bodies declared at most this long may use the budget's reserved quarter.
SMALL_BODY = 64 * 1024


class ReadBudget:
    """A byte count shared by every request being read (one event loop: no lock needed)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.large_limit = total - total // 4
        self.used = 0

    def take(self, size: int, *, small: bool) -> bool:
        """Count ``size`` more bytes held, unless that passes the budget (then ``False``)."""
        limit = self.total if small else self.large_limit
        if self.used + size > limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        """Release ``size`` bytes taken earlier."""
        self.used -= size
