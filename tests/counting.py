"""Counting shared by the tests and the benches: the most events in any window of time."""

from __future__ import annotations


def most_in_any_window(times: list[float], window: float = 60.0) -> int:
    """The most of ``times`` (seconds) that fall within any span shorter than ``window``
    (what a rate limit of N per window must keep at N or under)."""
    ordered, best, first = sorted(times), 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best
