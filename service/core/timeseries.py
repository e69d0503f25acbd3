"""Per-minute counters and latency histograms kept in Redis, for the console's charts.

Processes count into the in-memory ``RECORDER`` (no I/O) and write what they counted in a
pipeline they execute anyway: the workers at the end of each attempt, the web process every
few seconds. Each minute is one Redis hash ``calhooks:ts:<epoch minute>`` of integer fields,
expiring after ``RETENTION_MINUTES``, so the series is bounded in size whatever the traffic.

Field names: ``<name>`` for a count (``intake.accepted``, ``worker.done``, ``calcom.calls``,
``calcom.429``) or a gauge (``queue.depth``, ``dlq.entries``, ``spool.bytes``: the last
value sampled in the minute), ``<name>:<bound>`` for a latency sample at most ``bound`` ms
(``intake.ms:5``), in the fixed ``LATENCY_BOUNDS_MS`` buckets, from which ``Series.quantile``
estimates p50/p99 per minute.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

KEY_PREFIX = "calhooks:ts:"
#: Six hours of minutes; older ones expire (and are dropped from memory unwritten).
RETENTION_MINUTES = 360
LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)
_OVERFLOW = "inf"


def minute_key(minute: int) -> str:
    return f"{KEY_PREFIX}{minute}"


def bucket(ms: float) -> str:
    """The histogram field suffix for a sample of ``ms`` milliseconds."""
    for bound in LATENCY_BOUNDS_MS:
        if ms <= bound:
            return str(bound)
    return _OVERFLOW


class Recorder:
    """Counts in memory, per minute, until ``write_into``/``flush`` sends them to Redis."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._pending: dict[int, Counter[str]] = {}
        self._gauges: dict[int, dict[str, int]] = {}
        # `calhooks dev` runs the intake and a worker in two threads of one process.
        self._lock = threading.Lock()

    def _minute(self) -> Counter[str]:
        """This minute's counts (the caller holds the lock); drops minutes past retention."""
        minute = int(self.clock() // 60)
        counts = self._pending.get(minute)
        if counts is None:
            for old in [m for m in self._pending if m <= minute - RETENTION_MINUTES]:
                del self._pending[old]
                self._gauges.pop(old, None)
            counts = self._pending[minute] = Counter()
        return counts

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._minute()[name] += n

    def observe_ms(self, name: str, ms: float) -> None:
        field = f"{name}:{bucket(ms)}"
        with self._lock:
            self._minute()[field] += 1

    def gauge(self, name: str, value: int) -> None:
        """A level sampled now (queue depth...): the minute keeps the last value written."""
        with self._lock:
            self._minute()
            minute = max(self._pending)
            self._gauges.setdefault(minute, {})[name] = value

    def write_into(self, pipe: Any) -> None:
        """Add the pending counts to ``pipe`` (a pipeline the caller executes)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            gauges, self._gauges = self._gauges, {}
        for minute, counts in pending.items():
            key = minute_key(minute)
            for name, n in counts.items():
                pipe.hincrby(key, name, n)
            if gauges.get(minute):
                pipe.hset(key, mapping=gauges[minute])
            pipe.expire(key, RETENTION_MINUTES * 60 + 60)

    async def flush(self, redis: aioredis.Redis) -> None:
        if not self._pending:
            return
        async with redis.pipeline(transaction=False) as pipe:
            self.write_into(pipe)
            await pipe.execute()


#: The process' recorder (the intake and the workers count into it).
RECORDER = Recorder()


@dataclass
class Series:
    """The counts of consecutive minutes, oldest first."""

    minutes: list[int]
    counts: list[dict[str, int]]

    def values(self, name: str) -> list[int]:
        return [c.get(name, 0) for c in self.counts]

    def total(self, name: str) -> int:
        return sum(self.values(name))

    def names(self, prefix: str) -> list[str]:
        """The count names starting with ``prefix`` seen in the series (no histogram fields)."""
        return sorted({n for c in self.counts for n in c if n.startswith(prefix) and ":" not in n})

    def quantile(self, name: str, q: float, *, minutes: int | None = None) -> float | None:
        """The ``q`` quantile (0-1) of ``name``'s samples over the last ``minutes`` (all)."""
        merged: Counter[str] = Counter()
        for counts in self.counts[-minutes:] if minutes else self.counts:
            for field, n in counts.items():
                if field.startswith(name + ":"):
                    merged[field.removeprefix(name + ":")] += n
        return _quantile(merged, q)

    def quantiles(self, name: str, q: float) -> list[float | None]:
        out: list[float | None] = []
        for counts in self.counts:
            per: Counter[str] = Counter(
                {
                    f.removeprefix(name + ":"): n
                    for f, n in counts.items()
                    if f.startswith(name + ":")
                }
            )
            out.append(_quantile(per, q))
        return out


def _quantile(buckets: Counter[str], q: float) -> float | None:
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bound in (*[str(b) for b in LATENCY_BOUNDS_MS], _OVERFLOW):
        seen += buckets.get(bound, 0)
        if seen >= rank:
            return math.inf if bound == _OVERFLOW else float(bound)
    return math.inf


async def read(redis: aioredis.Redis, minutes: int, *, now: float | None = None) -> Series:
    """The last ``minutes`` minutes (the current one included), in one round trip."""
    minutes = max(1, min(minutes, RETENTION_MINUTES))
    last = int((time.time() if now is None else now) // 60)
    wanted: Sequence[int] = range(last - minutes + 1, last + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for minute in wanted:
            pipe.hgetall(minute_key(minute))
        raw = await pipe.execute()
    counts = [{k.decode(): int(v) for k, v in item.items()} for item in raw]
    return Series(list(wanted), counts)
