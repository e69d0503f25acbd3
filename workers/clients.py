"""The organization each event is for, and the Cal.com client its tool calls go through.

An event's ``connection`` (a PCID, ``service.events.Event``) names the Cal.com organization
it came from; ``None`` is the organization configured by the environment
(``CALHOOKS_API_KEY``/``CALHOOKS_ORG_ID``), whose client the worker builds at startup.
``Organizations.scope(pcid)`` gives a ``Scope``: the client to call with, how the rules see
the organization (``rules.scope.Origin``), its metrics label and, when the event's rules
cannot run, why:

* the connection is read from the connection store (``service.connections.store``: its
  credentials decrypted, and registered with the log redactor there) and kept
  ``CACHE_SECONDS`` in the worker, so a removed connection stops being used soon after;
* its client shares the worker's HTTP pool and retry policy, calls the connection's base URL
  (``CALHOOKS_API_URL`` without one) with its credentials and org id, and counts its calls
  under its metrics label;
* every client of one Cal.com account (API key or platform client, and base URL - how
  Cal.com counts) goes through one ``SharedRateLimit``, the environment organization's
  included when it uses the same key: one budget per key, shared by every worker. A
  connection whose key has no budget left defers its own events only;
* a connection that no longer exists, has no org id, or cannot be read (no or another
  ``CALHOOKS_ENCRYPTION_KEY``, a record altered in Redis) gives a ``Scope`` with a
  ``problem``: the processor dead-letters the event's rules with it (a replay once the
  problem is fixed runs them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.tools import Tool
from calhooks.service.connections.store import Connection, ConnectionStore, ConnectionStoreError
from calhooks.workers import metrics
from calhooks.workers.eventlog import CallLog
from calhooks.workers.gates import GateChain
from calhooks.workers.ratelimit import SharedRateLimit, bucket_name
from calhooks.workers.rules.scope import Origin

logger = structlog.get_logger(__name__)

#: Seconds a worker keeps a connection (or its absence) before reading it again.
CACHE_SECONDS = 30.0
#: Scopes kept before the expired ones are dropped.
_PRUNE_ABOVE = 1024


class ConnectionUnavailable(Exception):
    """The event's connection cannot be used: its rules are dead-lettered with this."""


@dataclass(frozen=True, slots=True)
class Scope:
    """The organization of one event: its client, how rules see it, its metrics label."""

    client: CalcomClient
    #: ``None``: the organization configured by the environment.
    origin: Origin | None
    label: str
    #: Why the event's rules cannot run (they are dead-lettered with it), or ``None``.
    problem: str | None = None
    #: The rate-limit bucket of its key (``Organizations.limiter``), when it has a client.
    bucket: str | None = None

    def cache_org(self, org: Any) -> str:
        """The organization part of the read cache's keys: a connection's are its own."""
        return str(org) if self.origin is None else f"{self.origin.pcid}/{org}"


class _Paced:
    """A ``RequestGate``: one bucket's shared rate limit, its waits counted per connection."""

    def __init__(self, limiter: SharedRateLimit, label: str) -> None:
        self.limiter = limiter
        self.label = label

    async def before(self, tool: Tool) -> None:
        waited = await self.limiter.acquire()
        if waited:
            metrics.RATE_LIMIT_WAIT.labels(connection=self.label).observe(waited)

    async def after(self, tool: Tool, response: httpx.Response | None, elapsed: float) -> None:
        await self.limiter.after(tool, response, elapsed)


class Organizations:
    """Scopes by PCID for one worker process (see the module docstring)."""

    def __init__(
        self,
        environment: CalcomClient,
        *,
        limiter: Callable[[str], SharedRateLimit],
        store: ConnectionStore | None,
        store_problem: str | None = None,
        labels: metrics.ConnectionLabels | None = None,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.labels = labels or metrics.LABELS
        self._make_limiter = limiter
        self._limiters: dict[str, SharedRateLimit] = {}
        self._environment_bucket = bucket_name(environment.base_url, environment.credentials)
        self.environment = Scope(
            environment, None, metrics.ENV_LABEL, bucket=self._environment_bucket
        )
        environment.gate = self._gate(self._environment_bucket, metrics.ENV_LABEL)
        self.store = store
        #: Why connections cannot be read at all (no ``CALHOOKS_ENCRYPTION_KEY``).
        self.store_problem = store_problem
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._scopes: dict[str, tuple[float, Scope]] = {}

    def limiter(self, bucket: str) -> SharedRateLimit:
        """The one ``SharedRateLimit`` of a bucket (an account on a Cal.com) in this process."""
        found = self._limiters.get(bucket)
        if found is None:
            found = self._limiters[bucket] = self._make_limiter(bucket)
        return found

    async def scope(self, pcid: str | None) -> Scope:
        """The scope of an event of connection ``pcid`` (``None``: the environment's)."""
        if pcid is None:
            return self.environment
        now = self._clock()
        cached = self._scopes.get(pcid)
        if cached is not None and cached[0] > now:
            return cached[1]
        scope = await self._load(pcid)
        if len(self._scopes) >= _PRUNE_ABOVE:  # forget removed connections' scopes
            self._scopes = {k: v for k, v in self._scopes.items() if v[0] > now}
        self._scopes[pcid] = (now + self.cache_seconds, scope)
        return scope

    async def _load(self, pcid: str) -> Scope:
        unknown = Origin(pcid, pcid, "")
        if self.store is None:
            problem = self.store_problem or "this worker has no connection store"
            return self._unusable(unknown, f"connection {pcid} cannot be read: {problem}")
        try:
            connection = await self.store.get(pcid, tenant=None)
        except ConnectionStoreError as exc:
            logger.warning("connection.unreadable", pcid=pcid, error=str(exc))
            return self._unusable(unknown, f"connection {pcid} cannot be read: {exc}")
        if connection is None:
            return self._unusable(
                unknown, f"connection {pcid} no longer exists (removed): its events cannot run"
            )
        info = connection.info
        origin = Origin(info.pcid, info.name, info.tenant, info.org_id)
        if info.org_id is None:
            return self._unusable(
                origin,
                f"connection {info.name!r} ({pcid}) has no org id: add it again with"
                " `calhooks connections add --org-id`",
            )
        return self._usable(connection, origin)

    def _unusable(self, origin: Origin, problem: str) -> Scope:
        label = (
            self.labels.label(origin.pcid, origin.name, origin.tenant)
            if origin.tenant
            else metrics.OTHER_LABEL
        )
        return Scope(self.environment.client, origin, label, problem)

    def _usable(self, connection: Connection, origin: Origin) -> Scope:
        info = connection.info
        label = self.labels.label(info.pcid, info.name, info.tenant)
        environment = self.environment.client
        base_url = info.base_url or environment.base_url
        bucket = bucket_name(base_url, connection.credentials)
        client = environment.with_credentials(
            connection.credentials, base_url=base_url, org_id=info.org_id
        )
        client.gate = self._gate(bucket, label)
        shared = " (shares the environment's key)" if bucket == self._environment_bucket else ""
        log = logger.debug if info.pcid in self._scopes else logger.info  # info: the first time
        log("connection.loaded", connection=info.name, pcid=info.pcid, label=label + shared)
        return Scope(client, origin, label, bucket=bucket)

    def _gate(self, bucket: str, label: str) -> GateChain:
        """What every call of one organization goes through: its key's rate limit, then the
        call metrics and the event log's call record."""
        return GateChain(_Paced(self.limiter(bucket), label), metrics.CallMetrics(label), CallLog())

    async def aclose(self) -> None:
        """Forget every connection's client (they share the worker's HTTP pool, closed by it)."""
        self._scopes.clear()
        self._limiters.clear()
