"""Prometheus metrics of a worker process, served on its ``/metrics``.

They live in their own registry (``REGISTRY``) so a process that also runs the intake (as
``calhooks dev`` does) exposes each set on its own port without name clashes.

* ``calhooks_worker_events_total{outcome}`` - events finished: ``processed`` (every matched
  rule done), ``dead_lettered`` (at least one rule dead-lettered), ``skipped`` (stale booking
  event); and attempts that ended ``retried`` or ``deferred``.
* ``calhooks_worker_rules_total{outcome}`` - rules ``done``, ``failed`` (one attempt),
  ``retried``, ``dead_lettered``.
* ``calhooks_worker_step_seconds{tool,outcome}`` - step latency, including the rate-limit wait.
* ``calhooks_calcom_calls_total{tool,status}`` - HTTP attempts toward Cal.com by answer status
  (``error`` when none came back).
* ``calhooks_ratelimit_wait_seconds`` - waits for the shared rate limit (its count is the
  number of waits).
* ``calhooks_worker_pickup_seconds`` - from the intake accepting an event to a worker
  starting it (first attempt only).
* ``calhooks_worker_jobs_running``, ``calhooks_queue_ready_jobs`` (jobs due now: the backlog
  to autoscale on), ``calhooks_dead_letters`` - gauges refreshed when scraped.
"""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from calhooks.service.calcom.tools import Tool

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

EVENTS = Counter(
    "calhooks_worker_events",
    "Events finished by outcome, and attempts that ended retried or deferred.",
    ["outcome"],
    registry=REGISTRY,
)
RULES = Counter("calhooks_worker_rules", "Rule runs by outcome.", ["outcome"], registry=REGISTRY)
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
    ["tool", "status"],
    registry=REGISTRY,
)
RATE_LIMIT_WAIT = Histogram(
    "calhooks_ratelimit_wait_seconds",
    "Time spent waiting for the shared Cal.com rate limit.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
PICKUP_SECONDS = Histogram(
    "calhooks_worker_pickup_seconds",
    "From the intake accepting an event to a worker starting it.",
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


class CallMetrics:
    """A ``RequestGate`` counting every HTTP attempt toward Cal.com by tool and status."""

    async def before(self, tool: Tool) -> None:
        return None

    async def after(self, tool: Tool, response: httpx.Response | None, elapsed: float) -> None:
        status = str(response.status_code) if response is not None else "error"
        CALCOM_CALLS.labels(tool=tool.name, status=status).inc()


def render() -> bytes:
    """The registry in Prometheus' text exposition format."""
    return generate_latest(REGISTRY)
