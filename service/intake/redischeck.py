"""Whether the Redis the intake queues to may evict keys (``maxmemory-policy``).

A queue on a Redis that evicts under memory pressure can lose accepted jobs and dedupe keys
without an error anywhere. ``EvictionCheck`` reads ``CONFIG GET maxmemory-policy`` when the
intake starts and on each readiness probe while Redis answers: anything but ``noeviction`` is
logged as an error (``redis.eviction_unsafe``, once per change), stated in ``/readyz``'s body
(not a reason to be unready: deliveries are still stored) and exported as the gauge
``calhooks_intake_redis_noeviction`` (1 yes, 0 no, -1 unknown: ``CONFIG`` is disabled, as on
some managed services - check the setting in their console).
"""

from __future__ import annotations

import structlog

from calhooks.service.intake import metrics
from calhooks.service.intake.redispipe import (
    RedisDeadline,
    RedisPipe,
    RedisReplyError,
    RedisUnavailable,
)

log = structlog.get_logger("calhooks.intake")

SAFE_POLICY = "noeviction"
UNKNOWN = "unknown"


class EvictionCheck:
    """The last ``maxmemory-policy`` read from Redis (``None`` until Redis has answered)."""

    def __init__(self, pipe: RedisPipe) -> None:
        self.pipe = pipe
        self.policy: str | None = None
        metrics.REDIS_NOEVICTION.set(-1)

    @property
    def warning(self) -> str | None:
        """What to tell an operator about the policy, or ``None`` when it is safe or unread."""
        if self.policy is None or self.policy == SAFE_POLICY:
            return None
        if self.policy == UNKNOWN:
            return "redis maxmemory-policy cannot be read (CONFIG disabled); it must be noeviction"
        return (
            f"redis maxmemory-policy is {self.policy}, not noeviction: "
            "queued deliveries and dedupe keys can be evicted"
        )

    async def check(self, deadline: float) -> str | None:
        """Read the policy (Redis away: keep the last one); returns it."""
        try:
            reply = await self.pipe.execute("CONFIG", "GET", "maxmemory-policy", deadline=deadline)
        except RedisReplyError as error:
            self._record(UNKNOWN, reason=str(error))
            return self.policy
        except (RedisUnavailable, RedisDeadline, OSError):  # a refusal is an answer
            return self.policy
        if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], bytes):
            self._record(reply[1].decode(errors="replace"))
        else:
            self._record(UNKNOWN, reason="unexpected CONFIG GET reply")
        return self.policy

    def _record(self, policy: str, *, reason: str | None = None) -> None:
        changed = policy != self.policy
        self.policy = policy
        metrics.REDIS_NOEVICTION.set(1 if policy == SAFE_POLICY else -1 if policy == UNKNOWN else 0)
        if not changed:
            return
        if policy == SAFE_POLICY:
            log.info("redis.eviction_policy", policy=policy)
        elif policy == UNKNOWN:
            log.warning("redis.eviction_policy_unknown", reason=reason, hint=self.warning)
        else:
            log.error("redis.eviction_unsafe", policy=policy, hint=self.warning)
