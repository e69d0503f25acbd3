"""Prometheus metrics of a worker process, served on its ``/metrics``.

They live in their own registry (``REGISTRY``) so a process that also runs the intake (as
``calhooks dev`` does) exposes each set on its own port without name clashes.

* ``calhooks_worker_events_total{connection,outcome}`` - events finished: ``processed``
  (every matched rule done), ``dead_lettered`` (at least one rule dead-lettered), ``skipped``
  (stale booking event); and attempts that ended ``retried`` or ``deferred``.
* ``calhooks_worker_rules_total{connection,outcome}`` - rules ``done``, ``failed`` (one
  attempt), ``retried``, ``dead_lettered``.
* ``calhooks_worker_step_seconds{tool,outcome}`` - step latency, including the rate-limit wait.
* ``calhooks_calcom_calls_total{connection,tool,status}`` - HTTP attempts toward Cal.com by
  answer status (``error`` when none came back).
* ``calhooks_ratelimit_wait_seconds{connection}`` - waits for the shared rate limit (its
  count is the number of waits).
* ``calhooks_worker_pickup_seconds{connection}`` - from the intake accepting an event to a
  worker starting it (first attempt only).

``connection`` is the organization an event is for (``ConnectionLabels``): ``env`` for the
one configured by the environment, a connection's name (``tenant/name`` outside the default
tenant) for the first ``CALHOOKS_METRICS_CONNECTIONS`` connections a worker process sees, and
``other`` for the rest - so the number of series stays bounded however many connections
there are. The step latency has no ``connection`` label: with 37 tools and their buckets it
would multiply the series by the connections.
* ``calhooks_worker_jobs_running``, ``calhooks_queue_ready_jobs`` (jobs due now: the backlog
  to autoscale on), ``calhooks_dead_letters`` - gauges refreshed when scraped.
"""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from calhooks.service.calcom.tools import Tool
from calhooks.service.connections.tenants import DEFAULT_TENANT

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

EVENTS = Counter(
    "calhooks_worker_events",
    "Events finished by outcome, and attempts that ended retried or deferred.",
    ["connection", "outcome"],
    registry=REGISTRY,
)
RULES = Counter(
    "calhooks_worker_rules", "Rule runs by outcome.", ["connection", "outcome"], registry=REGISTRY
)
STEP_SECONDS = Histogram(
    "calhooks_worker_step_seconds",
    "Duration of a rule step calling a Cal.com tool.",
    ["tool", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CALCOM_CALLS = Counter(
    "calhooks_calcom_calls",
    "HTTP attempts toward Cal.com by tool and answer status.",
    ["connection", "tool", "status"],
    registry=REGISTRY,
)
RATE_LIMIT_WAIT = Histogram(
    "calhooks_ratelimit_wait_seconds",
    "Time spent waiting for the shared Cal.com rate limit.",
    ["connection"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
PICKUP_SECONDS = Histogram(
    "calhooks_worker_pickup_seconds",
    "From the intake accepting an event to a worker starting it.",
    ["connection"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
JOBS_RUNNING = Gauge(
    "calhooks_worker_jobs_running", "Events this worker is running now.", registry=REGISTRY
)
READY_JOBS = Gauge(
    "calhooks_queue_ready_jobs",
    "Jobs in the queue that are due now (not deferred): the backlog.",
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "calhooks_dead_letters", "Entries in the dead-letter queue.", registry=REGISTRY
)


#: The ``connection`` label of the organization configured by the environment.
ENV_LABEL = "env"
#: The ``connection`` label of the connections past ``CALHOOKS_METRICS_CONNECTIONS``.
OTHER_LABEL = "other"
DEFAULT_CONNECTION_LABELS = 20


class ConnectionLabels:
    """Gives each connection its ``connection`` label: its own for the first ``limit``
    connections this process sees, ``other`` for the rest (see the module docstring)."""

    def __init__(self, limit: int = DEFAULT_CONNECTION_LABELS) -> None:
        self.limit = limit
        self._given: dict[str, str] = {}

    def label(self, pcid: str, name: str, tenant: str = DEFAULT_TENANT) -> str:
        """The label of the connection ``pcid`` (named ``name`` in ``tenant``)."""
        given = self._given.get(pcid)
        if given is not None:
            return given
        if len(self._given) >= self.limit:
            return OTHER_LABEL
        label = name if tenant == DEFAULT_TENANT else f"{tenant}/{name}"
        if label in (ENV_LABEL, OTHER_LABEL) or label in self._given.values():
            label = f"{label} ({pcid[:8]})"  # never one series for two organizations
        self._given[pcid] = label
        return label


#: The labels of this process (``workers.bootstrap`` sets the limit from the settings).
LABELS = ConnectionLabels()


class CallMetrics:
    """A ``RequestGate`` counting every HTTP attempt toward Cal.com by tool and status."""

    def __init__(self, connection: str = ENV_LABEL) -> None:
        self.connection = connection

    async def before(self, tool: Tool) -> None:
        return None

    async def after(self, tool: Tool, response: httpx.Response | None, elapsed: float) -> None:
        status = str(response.status_code) if response is not None else "error"
        CALCOM_CALLS.labels(connection=self.connection, tool=tool.name, status=status).inc()


def render() -> bytes:
    """The registry in Prometheus' text exposition format."""
    return generate_latest(REGISTRY)
