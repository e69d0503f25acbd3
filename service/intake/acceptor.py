"""Handing an accepted delivery to durable storage: the Redis queue, else the disk spool.

A delivery that came in through a connection's URL keeps its connection (``Event.connection``,
the PCID) all the way: the spool record carries the PCID, and a replayed event is rebuilt with
it, so it has the same id and connection as had it been queued live.

``Acceptor.accept`` tries the queue with a deadline (``CALHOOKS_REDIS_DEADLINE``). When Redis
fails or is too slow it trips a breaker and spools the delivery instead; while the breaker is
open, deliveries go straight to the spool, so an outage costs no deadline per request. A
delivery the queue refuses for any other reason (its job cannot be encoded) is spooled too,
and ends up in the spool's quarantine instead of being lost. Only
when the spool refuses too (full, unwritable) does ``accept`` raise ``Unavailable`` - the
intake then answers 503 with ``Retry-After``.

``Acceptor.run`` is the background task that closes the breaker: while Redis is down or
anything is spooled, it pings Redis every ``drain_interval`` seconds and, once Redis
answers, replays the spool into the queue (with the same dedupe key, so nothing is queued
twice) and sends live traffic to Redis again. A spooled record that cannot be queued for any
reason but Redis' (it no longer parses, the job encoder raises) is quarantined by the spool and
the replay goes on past it.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Sequence

import structlog

from calhooks.service.events import Event, event_from_body
from calhooks.service.intake import metrics
from calhooks.service.intake.queue import Enqueued, EventQueue
from calhooks.service.intake.redispipe import (
    RedisPipe,
    RedisPipeError,
)
from calhooks.service.intake.spool import Record, Spool, SpoolError

log = structlog.get_logger("calhooks.intake")

#: What the Redis pipe raises when it cannot store a delivery now (the spool takes over).
REDIS_ERRORS = (RedisPipeError, OSError)


class Stored(enum.Enum):
    QUEUED = "accepted"
    DUPLICATE = "duplicate"
    SPOOLED = "spooled"


class Unavailable(Exception):
    """Neither Redis nor the spool can take the delivery now."""


class Acceptor:
    """Queue or spool each delivery; replay the spool when Redis is back."""

    def __init__(
        self,
        queue: EventQueue,
        spool: Spool,
        *,
        deadline: float,
        drain_interval: float = 1.0,
        replay_deadline: float = 5.0,
    ) -> None:
        self.queue = queue
        self.spool = spool
        self.deadline = deadline
        self.drain_interval = drain_interval
        self.replay_deadline = max(replay_deadline, deadline)
        self.redis_up = True

    @property
    def pipe(self) -> RedisPipe:
        return self.queue.pipe

    async def accept(self, event: Event, raw: bytes) -> Stored:
        """Store ``event`` (whose body is ``raw``) durably; ``Unavailable`` if impossible."""
        if self.redis_up:
            started = time.perf_counter()
            try:
                result = await self.queue.enqueue(event, deadline=self.deadline)
            except REDIS_ERRORS as error:
                self._trip(error)
            except Exception:  # not Redis: the event itself. Spooled, so replay quarantines it.
                log.exception("intake.enqueue_failed", event_id=event.id)
            else:
                metrics.ENQUEUE_SECONDS.observe(time.perf_counter() - started)
                return Stored.QUEUED if result is Enqueued.QUEUED else Stored.DUPLICATE
        try:
            await self.spool.append(event.received_at, raw, event.connection)
        except SpoolError as error:
            raise Unavailable(str(error)) from error
        return Stored.SPOOLED

    def _trip(self, error: BaseException) -> None:
        if self.redis_up:
            self.redis_up = False
            log.warning(
                "intake.redis_down_spooling",
                reason=f"{type(error).__name__}: {error}",
                spool=str(self.spool.directory),
            )
            # Drop the connection: one stuck on a dead peer would never answer the probe.
            self.pipe.reset()

    async def run(self) -> None:
        """Close the breaker and replay the spool when Redis answers (for ever)."""
        while True:
            await asyncio.sleep(self.drain_interval)
            if self.redis_up and not self.spool.pending():
                continue
            try:
                await self.drain()
            except Exception:  # never let the drainer die; the next pass retries
                log.exception("spool.replay_failed")

    async def drain(self) -> int:
        """One pass: if Redis answers, reopen it to traffic and replay the spool."""
        if not await self.pipe.ping(self.replay_deadline):
            return 0
        if not self.redis_up:
            self.redis_up = True
            log.info("intake.redis_back")
        try:
            replayed = await self.spool.replay(self._replay, transient=REDIS_ERRORS)
        except REDIS_ERRORS as error:
            self._trip(error)
            return 0
        if replayed:
            log.info("spool.replayed", records=replayed)
        return replayed

    async def _replay(self, records: Sequence[Record]) -> None:
        # A body that parsed when spooled but no longer does (a newer release is stricter)
        # raises BodyError here: the spool quarantines that record and goes on.
        # A connection's record carries its PCID: the event keeps its connection and its id.
        events = [
            event_from_body(
                record.body, received_at=record.received_at, connection=record.connection
            )
            for record in records
        ]
        results = await asyncio.gather(
            *(self.queue.enqueue(event, deadline=self.replay_deadline) for event in events)
        )
        for result in results:
            metrics.REPLAYED.labels(result=result.value).inc()
