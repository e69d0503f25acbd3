"""The web process' probes and metrics endpoint.

* ``GET /livez`` - 200 while the process serves requests. It touches nothing external: a
  Redis outage must not get every pod restarted (the intake spools meanwhile).
* ``GET /readyz`` - 200 when Redis answers ``PING`` and every secret source has loaded;
  503 otherwise. The JSON body says which check failed, how many secrets are valid, whether
  deliveries currently go to Redis or to the spool, and what the spool holds.
* ``GET /metrics`` - Prometheus text; the gauges (ready jobs, Redis, spool, secrets) are
  refreshed on each scrape.
"""

from __future__ import annotations

import contextlib

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calhooks.service.intake import metrics
from calhooks.service.intake.acceptor import REDIS_ERRORS, Acceptor
from calhooks.service.intake.queue import EventQueue
from calhooks.service.intake.secrets import SecretProvider

log = structlog.get_logger("calhooks.web")

PROBE_TIMEOUT = 1.0
_NO_CACHE = {"cache-control": "no-store"}


class Health:
    """Endpoints answering for one intake's components."""

    def __init__(self, *, queue: EventQueue, secrets: SecretProvider, acceptor: Acceptor):
        self.queue = queue
        self.secrets = secrets
        self.acceptor = acceptor

    async def livez(self, _: Request) -> Response:
        return JSONResponse({"status": "live"}, headers=_NO_CACHE)

    async def readyz(self, _: Request) -> Response:
        redis_ok = await self.queue.pipe.ping(PROBE_TIMEOUT)
        secrets = self.secrets.status()
        spool = self.acceptor.spool
        ready = redis_ok and secrets["ready"]
        body = {
            "status": "ready" if ready else "unready",
            "redis": "ok" if redis_ok else "unreachable",
            "deliveries_to": "redis" if self.acceptor.redis_up else "spool",
            "secrets": secrets,
            "spool": {"bytes": spool.size, "limit": spool.max_bytes, "error": spool.error},
        }
        return JSONResponse(body, status_code=200 if ready else 503, headers=_NO_CACHE)

    async def metrics(self, _: Request) -> Response:
        with contextlib.suppress(*REDIS_ERRORS):  # Redis away: the gauge keeps its last value
            metrics.READY_JOBS.set(await self.queue.ready_jobs(deadline=PROBE_TIMEOUT))
        metrics.REDIS_UP.set(1 if self.acceptor.redis_up else 0)
        metrics.SPOOL_BYTES.set(self.acceptor.spool.size)
        try:
            metrics.SECRETS.set(len(self.secrets.keys()))
        except Exception:  # a broken secret source must not take the metrics down with it
            log.exception("readiness.secrets_uncountable")
        return Response(
            metrics.render(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
            headers=_NO_CACHE,
        )
