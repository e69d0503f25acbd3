"""Queueing reconciliation's events exactly as the intake queues a delivery.

The same contract (``calhooks.service.events``): the intake's de-duplication key
(``DEDUPE_PREFIX`` + event id, kept ``dedupe_window`` seconds), arq's job record
(``job_bytes``) under the event id, the queue's sorted set and its wake-up list - in one
Lua script, so an event is queued once however often a run that crashed half way emits it
again (event ids are derived from the change, not from the time).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import redis.asyncio as aioredis
from arq.constants import job_key_prefix, result_key_prefix

from calhooks.service.events import (
    DEDUPE_PREFIX,
    WAKE_LIST_LENGTH,
    Event,
    job_bytes,
    wake_key,
)

_ENQUEUE = """
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return 0 end
redis.call('PSETEX', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[6]) - 1)
return 1
"""


def change_id(*parts: Any) -> str:
    """A stable event id for one observed change (hex SHA-256 of its parts as JSON)."""
    return hashlib.sha256(
        json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


class Emitter:
    """Puts events on the intake's queue; ``emit`` is ``False`` for an event already queued."""

    def __init__(self, redis: aioredis.Redis, *, queue_name: str, dedupe_window: int) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.dedupe_window = dedupe_window
        self._script = redis.register_script(_ENQUEUE)

    async def emit(self, event: Event) -> bool:
        now_ms = int(time.time() * 1000)
        added = await self._script(
            keys=[
                DEDUPE_PREFIX + event.id,
                job_key_prefix + event.id,
                result_key_prefix + event.id,
                self.queue_name,
                wake_key(self.queue_name),
            ],
            args=[
                self.dedupe_window,
                job_bytes(event, now_ms),
                self.dedupe_window * 1000,
                now_ms,
                event.id,
                WAKE_LIST_LENGTH,
            ],
        )
        return bool(added == 1)
