"""The events page's query over the recent-events index (``service/core/eventindex.py``).

Newest first, 50 a page. Without filters a page is two round trips (a range of the index,
then the summaries). Filters on trigger, outcome, rule or booking uid read the index in
batches, newest first, until a page is full or ``SCAN_LIMIT`` events were looked at (the
page then says how far back it looked and offers to go on); an outcome or a trigger reads
that outcome's or trigger's own index instead of every event. Time bounds narrow the index
range; an id prefix of four or more characters reads its prefix bucket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from calhooks.service.core.eventindex import (
    INDEX_KEY,
    OUTCOMES,
    bucket_key,
    outcome_key,
    summary_key,
    trigger_key,
)

PAGE = 50
BATCH = 500
SCAN_LIMIT = 20_000
PREFIX_MIN = 4  # = eventindex.BUCKET_CHARS


@dataclass(frozen=True)
class Filters:
    trigger: str = ""
    outcome: str = ""
    rule: str = ""
    uid: str = ""
    since: float | None = None
    until: float | None = None
    prefix: str = ""

    @property
    def index(self) -> str:
        """The narrowest index to read: by outcome, by trigger, or every event."""
        if self.outcome in OUTCOMES:
            return outcome_key(self.outcome)
        if self.trigger:
            return trigger_key(self.trigger)
        return INDEX_KEY

    @property
    def post(self) -> bool:
        """Whether summaries must be read to filter (the index alone does not decide)."""
        return bool(
            self.rule
            or self.uid
            or (self.outcome and self.trigger)
            or (self.outcome and self.outcome not in OUTCOMES)
        )

    def keep(self, summary: dict[str, Any]) -> bool:
        return (
            (not self.trigger or summary.get("trigger") == self.trigger)
            and (not self.outcome or summary.get("outcome") == self.outcome)
            and (not self.rule or self.rule in (summary.get("rules") or {}))
            and (not self.uid or str(summary.get("uid") or "") == self.uid)
        )


@dataclass
class Page:
    events: list[dict[str, Any]]
    #: Pass as ``before`` for the next (older) page; ``None`` when there is none.
    older: float | None = None
    #: How many index entries were looked at (filters only).
    scanned: int = 0
    total: int = 0
    notes: list[str] = field(default_factory=list)


async def _summaries(redis: aioredis.Redis, ids: list[bytes]) -> list[dict[str, Any] | None]:
    """The summaries of ``ids``, aligned with them (``None`` for an expired one)."""
    if not ids:
        return []
    raw = await redis.mget([summary_key(i.decode()) for i in ids])
    return [json.loads(item) if item is not None else None for item in raw]


async def query(
    redis: aioredis.Redis, filters: Filters, *, before: float | None = None, limit: int = PAGE
) -> Page:
    total = int(await redis.zcard(INDEX_KEY))
    if filters.prefix:
        return await _by_prefix(redis, filters, total, limit)
    bound = before if filters.until is None else min(before or filters.until, filters.until)
    high = "+inf" if bound is None else (f"({bound}" if before is not None else str(bound))
    low = "-inf" if filters.since is None else str(filters.since)
    found: list[dict[str, Any]] = []
    scanned = 0
    cursor: float | None = None
    exhausted = False
    while len(found) < limit and scanned < SCAN_LIMIT:
        want = BATCH if filters.post else limit - len(found)
        batch = await redis.zrevrangebyscore(
            filters.index, high, low, start=0, num=want, withscores=True
        )
        summaries = await _summaries(redis, [member for member, _ in batch])
        consumed = 0
        for (_, score), summary in zip(batch, summaries, strict=True):
            consumed += 1
            cursor = float(score)
            if summary is not None and filters.keep(summary):
                found.append(summary)
                if len(found) == limit:
                    break
        scanned += consumed
        if len(batch) < want:
            exhausted = consumed == len(batch)
            break
        high = f"({cursor}"
    older = None if exhausted or cursor is None else cursor
    page = Page(found, older=older, scanned=scanned, total=total)
    if filters.post and scanned >= SCAN_LIMIT and len(found) < limit:
        page.notes.append(f"looked at the {scanned} most recent events in this range")
    return page


async def _by_prefix(redis: aioredis.Redis, filters: Filters, total: int, limit: int) -> Page:
    prefix = filters.prefix.lower()
    if len(prefix) < PREFIX_MIN or not all(c.isalnum() for c in prefix):
        return Page([], total=total, notes=[f"an id prefix needs {PREFIX_MIN}+ letters or digits"])
    members = await redis.zrevrange(bucket_key(prefix), 0, -1)
    ids = [m for m in members if m.decode().startswith(prefix)][: limit * 4]
    summaries = [s for s in await _summaries(redis, ids) if s is not None and filters.keep(s)]
    return Page(summaries[:limit], total=total)
