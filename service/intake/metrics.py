"""Prometheus metrics of the web process (the intake), served on its ``/metrics``.

They live in their own registry (``REGISTRY``), as the workers' do, so a process running both
exposes each set on its own port without clashes.

* ``calhooks_intake_deliveries_total{outcome}`` - every request to the webhook path, by how it
  ended: ``accepted`` (queued, 202), ``spooled`` (on disk while Redis is away, 202),
  ``duplicate`` (200), ``ping`` (200, not queued), ``bad_signature`` (401),
  ``unknown_connection`` (401: a connection URL whose PCID is no connection), ``bad_body`` (400),
  ``too_large`` (413), ``too_slow`` (408: the body took longer than
  ``CALHOOKS_BODY_READ_TIMEOUT``), ``overloaded`` (503: the read budget was full),
  ``bad_method`` (405), ``unavailable`` (503: Redis and spool both
  refused), ``error`` (503: an unexpected exception, logged with its traceback).
* ``calhooks_intake_events_total{trigger}`` - deliveries stored (accepted or spooled) by
  trigger; triggers Cal.com does not document count as ``unknown`` (and are logged by name).
* ``calhooks_intake_request_seconds`` - time from the request to the answer, webhook path.
* ``calhooks_intake_enqueue_seconds`` - time the Redis write of one event took.
* ``calhooks_intake_spool_replayed_total{result}`` - spooled deliveries replayed into the
  queue: ``queued``, or ``duplicate`` (already queued live or by an earlier replay).
* ``calhooks_intake_spool_quarantined_total`` - spooled records that could not be queued for a
  reason other than Redis, moved to the spool's ``quarantine/`` directory (alert on any).
* ``calhooks_intake_connections`` and ``calhooks_intake_connections_with_secret`` (refreshed when
  scraped): connections the intake knows, and those of them with a valid secret;
* gauges refreshed when scraped: ``calhooks_queue_ready_jobs`` (jobs due now - the backlog to
  autoscale workers on; deferred retries are not counted), ``calhooks_intake_redis_up``,
  ``calhooks_intake_spool_bytes``, ``calhooks_intake_webhook_secrets`` (valid now);
* gauges set by each readiness probe: ``calhooks_intake_redis_up`` (Redis answered - alert on
  0; the pod stays ready while its spool can take deliveries), ``calhooks_intake_ready``,
  ``calhooks_intake_spool_writable`` (a delivery of the largest size fits), and
  ``calhooks_intake_redis_noeviction`` (1: ``noeviction``; 0: another ``maxmemory-policy``,
  which can evict queued jobs - alert on it; -1: unknown).

Every series is aggregate over the environment organization and all connections: a label per
connection would grow with the connections (hundreds). Which connection a delivery came
through is in its access log line (``connection``, the PCID).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from calhooks.service.events import KNOWN_TRIGGERS

REGISTRY = CollectorRegistry(auto_describe=True)

OUTCOMES = (
    "accepted",
    "spooled",
    "duplicate",
    "ping",
    "bad_signature",
    "unknown_connection",
    "bad_body",
    "too_large",
    "too_slow",
    "overloaded",
    "bad_method",
    "unavailable",
    "error",
)
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

DELIVERIES = Counter(
    "calhooks_intake_deliveries",
    "Requests to the webhook path by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "calhooks_intake_events",
    "Deliveries stored (queued or spooled) by trigger; undocumented triggers as `unknown`.",
    ["trigger"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "calhooks_intake_request_seconds",
    "Time to answer a request to the webhook path.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENQUEUE_SECONDS = Histogram(
    "calhooks_intake_enqueue_seconds",
    "Time the Redis write (dedupe + enqueue) of one event took.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
REPLAYED = Counter(
    "calhooks_intake_spool_replayed",
    "Spooled deliveries replayed into the queue, by result.",
    ["result"],
    registry=REGISTRY,
)
QUARANTINED = Counter(
    "calhooks_intake_spool_quarantined",
    "Spooled deliveries that could not be queued, moved to the quarantine directory.",
    registry=REGISTRY,
)
READY_JOBS = Gauge(
    "calhooks_queue_ready_jobs",
    "Jobs in the queue that are due now (not deferred): the backlog.",
    registry=REGISTRY,
)
REDIS_UP = Gauge(
    "calhooks_intake_redis_up",
    "1 while Redis answers and takes deliveries, 0 while they are spooled to disk.",
    registry=REGISTRY,
)
READY = Gauge(
    "calhooks_intake_ready",
    "1 while /readyz is 200: a valid secret, and Redis or a spool with room.",
    registry=REGISTRY,
)
SPOOL_WRITABLE = Gauge(
    "calhooks_intake_spool_writable",
    "1 while the spool could take a delivery of the largest size.",
    registry=REGISTRY,
)
REDIS_NOEVICTION = Gauge(
    "calhooks_intake_redis_noeviction",
    "1: Redis' maxmemory-policy is noeviction; 0: another (jobs can be evicted); -1: unknown.",
    registry=REGISTRY,
)
SPOOL_BYTES = Gauge(
    "calhooks_intake_spool_bytes", "Bytes in the spool waiting for Redis.", registry=REGISTRY
)
SECRETS = Gauge(
    "calhooks_intake_webhook_secrets", "Webhook signing secrets valid now.", registry=REGISTRY
)
CONNECTIONS = Gauge(
    "calhooks_intake_connections",
    "Connections the intake knows (each verified on its own URL with its own secrets).",
    registry=REGISTRY,
)
CONNECTIONS_WITH_SECRET = Gauge(
    "calhooks_intake_connections_with_secret",
    "Connections with at least one valid webhook signing secret.",
    registry=REGISTRY,
)

for _outcome in OUTCOMES:
    DELIVERIES.labels(outcome=_outcome)
for _result in ("queued", "duplicate"):
    REPLAYED.labels(result=_result)

#: Counter children looked up once: the hot path increments them directly.
DELIVERY_COUNTERS = {outcome: DELIVERIES.labels(outcome=outcome) for outcome in OUTCOMES}
_EVENT_COUNTERS = {trigger: EVENTS.labels(trigger=trigger) for trigger in KNOWN_TRIGGERS}
_UNKNOWN_EVENTS = EVENTS.labels(trigger="unknown")


def count_event(trigger: str) -> None:
    """Count a stored delivery under its trigger (a bounded label set, whatever is sent)."""
    _EVENT_COUNTERS.get(trigger, _UNKNOWN_EVENTS).inc()


def render() -> bytes:
    """The registry in Prometheus' text exposition format."""
    return generate_latest(REGISTRY)
