"""The web process' probes and metrics endpoint.

* ``GET /livez`` - 200 while the process serves requests. It touches nothing external: a
  Redis outage must not get every pod restarted (the intake spools meanwhile).
* ``GET /readyz`` - "can this pod accept a delivery durably now?" 200 when at least one
  webhook secret is valid (or unsigned deliveries are allowed) and either Redis answers
  ``PING`` or the spool is writable with room for one more delivery of the largest size;
  503 otherwise. The secret may be the environment organization's or any connection's: a
  connection without a secret yet (its webhook not applied) gets 401s on its own URL and
  makes no pod unready - ``connections`` in the body counts those known and those with a
  secret, and a connection listing that failed (Redis away) keeps the ones known before.
  A Redis outage alone never makes the pod unready: that would take every pod
  out of the Service exactly when the spool is there to take the deliveries (Cal.com does not
  retry). Redis' state is in the body and in ``calhooks_intake_redis_up`` - alert on those.
  The JSON body says what was checked, with states only (``ok``, ``unreachable``,
  ``unavailable``, ``full``, ...): no file paths or error text, which go to the log.
* ``GET /metrics`` - Prometheus text; the gauges (ready jobs, Redis, spool, secrets) are
  refreshed on each scrape.

With ``CALHOOKS_PROBE_PORT`` set, these three are served on that port only (``service.app``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calhooks.service.intake import metrics
from calhooks.service.intake.acceptor import REDIS_ERRORS, Acceptor
from calhooks.service.intake.connection_secrets import ConnectionSecrets
from calhooks.service.intake.queue import EventQueue
from calhooks.service.intake.redischeck import EvictionCheck
from calhooks.service.intake.secrets import SecretProvider
from calhooks.service.intake.spool import HEADER_SIZE, SpoolState

log = structlog.get_logger("calhooks.web")

PROBE_TIMEOUT = 1.0
_NO_CACHE = {"cache-control": "no-store"}


class Health:
    """Endpoints answering for one intake's components."""

    def __init__(
        self,
        *,
        queue: EventQueue,
        secrets: SecretProvider,
        acceptor: Acceptor,
        eviction: EvictionCheck,
        max_body_bytes: int,
        allow_unsigned: bool = False,
        connections: ConnectionSecrets | None = None,
    ) -> None:
        self.connections = connections
        self.queue = queue
        self.secrets = secrets
        self.acceptor = acceptor
        self.eviction = eviction
        #: Room the spool must have: one more record of the largest body.
        self.headroom = max_body_bytes + HEADER_SIZE
        self.allow_unsigned = allow_unsigned
        self._last: tuple[Any, ...] | None = None

    async def livez(self, _: Request) -> Response:
        return JSONResponse({"status": "live"}, headers=_NO_CACHE)

    async def _spool_state(self) -> SpoolState:
        try:
            return await asyncio.wait_for(self.acceptor.spool.check(self.headroom), PROBE_TIMEOUT)
        except TimeoutError:
            self.acceptor.spool.error = "spool check did not finish in time"
            return SpoolState.UNWRITABLE

    async def readyz(self, _: Request) -> Response:
        redis_ok, spool_state = await asyncio.gather(
            self.queue.pipe.ping(PROBE_TIMEOUT), self._spool_state()
        )
        if redis_ok:
            await self.eviction.check(PROBE_TIMEOUT)
        secrets = self.secrets.status()
        connections = self.connections.status() if self.connections is not None else None
        secrets_ok = (
            secrets["valid"] > 0
            or self.allow_unsigned
            or (connections is not None and connections["with_secret"] > 0)
        )
        storage = "redis" if redis_ok else "spool" if spool_state is SpoolState.OK else None
        reasons = []
        if not secrets_ok:
            reasons.append("no valid webhook secret: every delivery would get 401")
        if storage is None:
            reasons.append(f"redis unreachable and spool {spool_state.value}")
        ready = not reasons
        warnings = []
        if not redis_ok:
            warnings.append("redis unreachable: deliveries are spooled to disk")
        if self.eviction.warning:
            warnings.append(self.eviction.warning)
        spool = self.acceptor.spool
        body = {
            "status": "ready" if ready else "unready",
            "accepts_to": storage or "nothing",
            "deliveries_to": "redis" if self.acceptor.redis_up else "spool",
            "redis": "ok" if redis_ok else "unreachable",
            "redis_maxmemory_policy": self.eviction.policy or "unknown",
            "secrets": secrets,
            **({} if connections is None else {"connections": connections}),
            "spool": {"state": spool_state.value, "bytes": spool.size, "limit": spool.max_bytes},
            "reasons": reasons,
            "warnings": warnings,
        }
        metrics.READY.set(1 if ready else 0)
        metrics.REDIS_UP.set(1 if redis_ok else 0)
        metrics.SPOOL_WRITABLE.set(1 if spool_state is SpoolState.OK else 0)
        self._log_change(ready, redis_ok, spool_state, reasons)
        return JSONResponse(body, status_code=200 if ready else 503, headers=_NO_CACHE)

    def _log_change(
        self, ready: bool, redis_ok: bool, spool: SpoolState, reasons: list[str]
    ) -> None:
        """Log readiness when it changes, with the details the body leaves out."""
        state = (ready, redis_ok, spool)
        if state == self._last:
            return
        self._last = state
        log.log(
            20 if ready else 40,
            "intake.readiness",
            ready=ready,
            redis="ok" if redis_ok else "unreachable",
            spool=spool.value,
            spool_error=self.acceptor.spool.error if spool is not SpoolState.OK else None,
            reasons=reasons,
        )

    async def metrics(self, _: Request) -> Response:
        answered = False
        with contextlib.suppress(*REDIS_ERRORS):  # Redis away: the gauge keeps its last value
            metrics.READY_JOBS.set(await self.queue.ready_jobs(deadline=PROBE_TIMEOUT))
            answered = True
        metrics.REDIS_UP.set(1 if answered and self.acceptor.redis_up else 0)
        metrics.SPOOL_BYTES.set(self.acceptor.spool.size)
        try:
            metrics.SECRETS.set(len(self.secrets.keys()))
            if self.connections is not None:
                metrics.CONNECTIONS.set(self.connections.count)
                metrics.CONNECTIONS_WITH_SECRET.set(self.connections.with_secret())
        except Exception:  # a broken secret source must not take the metrics down with it
            log.exception("readiness.secrets_uncountable")
        return Response(
            metrics.render(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
            headers=_NO_CACHE,
        )
