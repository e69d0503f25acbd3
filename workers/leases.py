"""Leases: short-lived Redis keys a worker keeps alive for as long as it is alive.

A worker that dies (SIGKILL, out of memory, a lost node) cannot release what it holds. Two
keys matter: arq's in-progress key of each running job (while it exists no worker starts
the job) and the booking lock of each running event (``calhooks.workers.ordering``). Both
are written with a TTL of ``CALHOOKS_WORKER_LEASE`` seconds - not the job timeout - and a
``LeaseKeeper`` task renews every key the worker still holds every third of that, in one
round trip. A dead worker's keys therefore lapse within one lease, and its jobs are claimed
again by any worker's next poll, while a healthy worker can spend the whole job timeout on a
slow event.

A key is renewed only while it still holds the value this worker wrote (its own token for
an in-progress key, the event id for a booking lock): a lease that lapsed - say the worker's
loop was starved, or Redis came back from disk without it - is reported as lost and the
worker stops the job (``on_lost``) instead of running it alongside the worker that took it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as aioredis
import redis.exceptions
import structlog

logger = structlog.get_logger(__name__)

#: Errors that mean "Redis is away": retried, never fatal.
REDIS_AWAY: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    OSError,
    TimeoutError,
)

# KEYS: the leased keys. ARGV[1]: TTL (ms), then one expected value per key.
# Renews each key still holding its value; returns the 1-based positions of the lost ones.
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  else
    lost[#lost + 1] = i
  end
end
return lost
"""

# KEYS[1]: a leased key. ARGV[1]: its expected value. Deletes it only while it holds that.
RELEASE_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseKeeper:
    """The keys one worker holds, renewed every ``lease / 3`` seconds while it runs."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        lease: float,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.redis = redis
        self.lease = lease
        self.on_lost = on_lost
        self.held: dict[str, str] = {}
        self.renewals = 0
        self._renew = redis.register_script(_RENEW)
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    def hold(self, key: str, value: str) -> None:
        """Keep ``key`` alive while it holds ``value`` (until ``drop``)."""
        self.held[key] = value

    def drop(self, key: str) -> None:
        self.held.pop(key, None)

    async def renew(self) -> list[str]:
        """Renew every held key now; returns (and stops holding) the keys found lost."""
        if not self.held:
            return []
        items = list(self.held.items())
        positions = await self._renew(
            keys=[key for key, _ in items], args=[self.lease_ms, *(value for _, value in items)]
        )
        self.renewals += 1
        lost = []
        for position in positions:
            key, value = items[int(position) - 1]
            if self.held.get(key) != value:
                continue  # dropped during the round trip (its job ended): released, not lost
            del self.held[key]
            lost.append(key)
            logger.warning("lease.lost", key=key)
            if self.on_lost is not None:
                self.on_lost(key)
        return lost

    async def _keep(self) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except REDIS_AWAY as exc:  # the worker's loop reports the outage
                logger.debug("lease.renew_failed", error=type(exc).__name__)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name="calhooks-lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
