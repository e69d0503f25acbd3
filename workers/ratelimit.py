"""One rate limit toward Cal.com shared by every worker: a sliding window in Redis.

Cal.com counts requests per API key in fixed 60-second windows (120 for an API key by
default; both are server settings) and, once the count is exceeded, blocks the key for 60 s.
Scaling out workers must never add up to more than that, so every request first reserves a
slot in one log kept in Redis, whatever process it comes from.

The log is a sorted set of send times, updated by a Lua script, atomically, with Redis's
clock (so workers on different hosts agree). A request reserves the earliest time at which
no span of ``window + margin`` seconds would hold more than ``L - 1`` sends, and sleeps
until then: one round trip per request, waiters served in order, no polling. Cal.com counts
arrivals, not sends, and arrivals lag sends by different amounts (the first request of a
burst opens a connection, the others reuse one); the margin (1 s for a 60-s window) absorbs
that, and the spare request any remaining skew - so no window Cal.com counts ever holds more
than its limit, however many workers run. As long as there is work, ``L - 1`` requests go
out per ``window + margin`` (97.5 % of 120 a minute), in a burst when a quiet spell left
room for one: an event's few calls never wait while the limit is far away.
``window`` is 60 s unless Cal.com is configured otherwise (``L`` per minute is then
``L * window / 60`` per window).

Feedback from Cal.com's answers (``SharedRateLimit.after``):

* a 429, or an ``X-RateLimit-Remaining-*`` of 0, blocks every worker until the matching
  ``X-RateLimit-Reset-*`` / ``Retry-After`` (60 s when Cal.com says nothing): another
  client of the same key, or a restart that lost count, used the window up;
* an ``X-RateLimit-Limit-*`` lower than the configured limit lowers ``L`` to it (a key
  with a custom, lower limit).

**Waiting without holding a worker slot.** A job sleeps in its slot for a wait of at most
``hold`` seconds (``CALHOOKS_WORKER_RATE_LIMIT_HOLD``, 1 s). A longer wait, up to ``max_wait``,
is reserved all the same - under the event's *ticket* (``TICKET``, the event id, set by the
job for its attempt) - and ``acquire`` raises ``Defer`` for exactly that wait: the job gives
its slot back and, when it runs again, its first request finds the slot it reserved and goes
at once, without reserving another. So a key's backlog waits in the queue, in the order its
slots were reserved, each job re-queued once, while the worker slots serve other keys (other
organizations): one organization's flood cannot fill every slot with sleepers. A request
without a ticket (outside a job) sleeps up to ``max_wait`` as before. A reservation further
away than ``max_wait`` is not taken; ``acquire`` raises ``Defer`` and the job tries again
later.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import httpx
import redis.asyncio as aioredis
import structlog

from calhooks.service.calcom.backoff import rate_limit_state, server_wait
from calhooks.service.calcom.client import Credentials
from calhooks.service.calcom.tools import Tool
from calhooks.workers import keys
from calhooks.workers.retries import Defer

logger = structlog.get_logger(__name__)

BLOCK_WITHOUT_RESET = 60.0


def jitter_margin(window: float) -> float:
    """Seconds added to the window against uneven network delays (1 s for 60 s)."""
    return max(0.25, window / 60)


#: The event the running job's requests are for (its id): the name a slot reserved ahead of a
#: ``Defer`` is kept under in the send log, so that the job finds it again when it comes back.
TICKET: ContextVar[str | None] = ContextVar("calhooks_ratelimit_ticket", default=None)

_TICKET_PREFIX = "ticket:"

# KEYS[1] state hash, KEYS[2] send log; ARGV limit per window, span s, max_wait s, member,
# ticket member ("" without a ticket), hold s.
# Returns {wait seconds, reserved 0|1|2 (2: reserved under the ticket, ahead of a Defer),
# the block (epoch s) the reservation respects}.
_RESERVE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'blocked', 'limit')
local blocked = tonumber(state[1]) or 0
local learned = tonumber(state[2])
if learned and learned < limit then limit = learned end
local allowed = math.max(limit - 1, 1)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. tostring(now - window))
local ticket = ARGV[5]
if ticket ~= '' then
  local held = redis.call('ZSCORE', KEYS[2], ticket)
  if held then
    -- The slot this event reserved before it was deferred: it is this request's.
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('ZADD', KEYS[2], held, ARGV[4])
    return {tostring(math.max(tonumber(held) - now, 0)), 1, tostring(blocked)}
  end
end
local count = redis.call('ZCARD', KEYS[2])
local at = math.max(now, blocked)
if count > 0 then
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  at = math.max(at, tonumber(last[2]))
end
if count >= allowed then
  local leaving = redis.call('ZRANGE', KEYS[2], count - allowed, count - allowed, 'WITHSCORES')
  at = math.max(at, tonumber(leaving[2]) + window)
end
local wait = at - now
if wait > max_wait then
  return {tostring(wait), 0, tostring(blocked)}
end
local reserved, member = 1, ARGV[4]
if ticket ~= '' and wait > tonumber(ARGV[6]) then
  reserved, member = 2, ticket
end
redis.call('ZADD', KEYS[2], at, member)
redis.call('PEXPIRE', KEYS[2], math.ceil((at - now + window + 1) * 1000))
return {tostring(wait), reserved, tostring(blocked)}
"""

# KEYS[1] bucket; ARGV block seconds (0: none), learned limit (0: none). Returns blocked-for s.
_FEEDBACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local block = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
if block > 0 and now + block > blocked then
  blocked = now + block
  redis.call('HSET', KEYS[1], 'blocked', tostring(blocked))
end
if limit > 0 then
  redis.call('HSET', KEYS[1], 'limit', tostring(limit))
end
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(blocked - now, 0) + 3600) * 1000))
return tostring(math.max(blocked - now, 0))
"""

# KEYS[1] bucket. Returns {the block (epoch s), seconds it still lasts}.
_BLOCKED_FOR = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
return {tostring(blocked), tostring(math.max(blocked - now, 0))}
"""


def bucket_name(base_url: str, credentials: Credentials) -> str:
    """A bucket per Cal.com account: Cal.com limits per API key (or OAuth client)."""
    identity = credentials.api_key or credentials.client_id or "anonymous"
    return hashlib.sha256(f"{base_url}\n{identity}".encode()).hexdigest()[:16]


def advertised_limit(headers: Mapping[str, str]) -> int | None:
    """The lowest ``X-RateLimit-Limit-*`` Cal.com sent, if any."""
    limits = []
    for key, value in headers.items():
        if key.lower().startswith("x-ratelimit-limit-"):
            try:
                limits.append(int(float(value)))
            except ValueError:
                continue
    return min(limits) if limits else None


class SharedRateLimit:
    """A ``calcom.client.RequestGate`` reserving each request's slot in the shared log."""

    def __init__(
        self,
        redis: aioredis.Redis,
        bucket: str,
        *,
        per_minute: int = 120,
        window: float = 60.0,
        max_wait: float = 30.0,
        hold: float = 1.0,
        on_wait: Callable[[float], None] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.redis = redis
        self.key = keys.rate_limit(bucket)
        self.log_key = keys.rate_limit_log(bucket)
        self.per_minute = per_minute
        self.window = window
        #: The span no ``per_window - 1`` sends may exceed: the window plus a margin.
        self.span = window + jitter_margin(window)
        #: Requests allowed per window (what Cal.com's X-RateLimit-Limit-* counts).
        self.per_window = max(1, round(per_minute * window / 60))
        self.max_wait = max_wait
        #: Longest wait slept in a job's slot; a longer one is reserved under its ticket.
        self.hold = min(hold, max_wait)
        self.on_wait = on_wait
        self._sleep = sleep
        self._reserve = redis.register_script(_RESERVE)
        self._feedback = redis.register_script(_FEEDBACK)
        self._blocked_for = redis.register_script(_BLOCKED_FOR)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def acquire(self) -> float:
        """Wait for a slot; return the seconds waited. Raises ``Defer`` past ``max_wait``, and
        past ``hold`` within a job (the slot then reserved for when it comes back)."""
        if not self.enabled:
            return 0.0
        ticket = TICKET.get()
        raw_wait, reserved, raw_block = await self._reserve(
            keys=[self.key, self.log_key],
            args=[
                self.per_window,
                self.span,
                self.max_wait,
                uuid.uuid4().hex,
                _TICKET_PREFIX + ticket if ticket else "",
                self.hold,
            ],
        )
        waited = float(raw_wait)
        if not reserved:
            raise Defer(waited, "shared Cal.com rate limit")
        if int(reserved) == 2:
            raise Defer(waited, "shared Cal.com rate limit (slot reserved)")
        if waited > 0:
            await self._sleep(waited)
            # A 429 seen by another worker while this one slept blocks it too.
            seen_block = float(raw_block)
            raw_block, raw_left = await self._blocked_for(keys=[self.key])
            left = float(raw_left)
            if float(raw_block) > seen_block and left > 0:
                if waited + left > self.max_wait:
                    raise Defer(left, "Cal.com rate limit block")
                await self._sleep(left)
                waited += left
        if waited and self.on_wait:
            self.on_wait(waited)
        return waited

    async def report(self, status: int | None, headers: Mapping[str, str]) -> float:
        """Feed one Cal.com answer back into the bucket; return the block it caused, in s."""
        block = 0.0
        if status == 429:
            block = server_wait(headers, throttled=True) or BLOCK_WITHOUT_RESET
        else:
            exhausted = [
                reset
                for remaining, reset in rate_limit_state(headers).values()
                if remaining is not None and remaining <= 0
            ]
            if exhausted:
                block = max((reset or BLOCK_WITHOUT_RESET) for reset in exhausted)
        limit = advertised_limit(headers)
        learned = limit if limit is not None and limit < self.per_window else 0
        if not block and not learned:
            return 0.0
        blocked_for = float(await self._feedback(keys=[self.key], args=[block, learned]))
        if block:
            logger.warning("ratelimit.blocked", seconds=round(blocked_for, 3), status=status)
        return blocked_for

    async def before(self, tool: Tool) -> None:
        await self.acquire()

    async def after(self, tool: Tool, response: httpx.Response | None, elapsed: float) -> None:
        if response is not None and self.enabled:
            await self.report(response.status_code, response.headers)
