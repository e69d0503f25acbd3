"""Reconciliation's Prometheus metrics, in the worker's registry (served on its ``/metrics``).

* ``calhooks_reconcile_passes_total{outcome}`` - passes ``done``, ``busy`` (another held the
  lock), ``failed`` (Redis or Cal.com away), ``skipped`` (a connection that cannot be used);
* ``calhooks_reconcile_calls_total`` - list calls spent;
* ``calhooks_reconcile_entities{kind}`` - entities in the last complete listing of each kind;
* ``calhooks_reconcile_events_total{trigger}`` - events queued (not counting duplicates).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from calhooks.workers.metrics import REGISTRY

PASSES = Counter(
    "calhooks_reconcile_passes", "Reconciliation passes by outcome.", ["outcome"], registry=REGISTRY
)
CALLS = Counter("calhooks_reconcile_calls", "List calls reconciliation spent.", registry=REGISTRY)
ENTITIES = Gauge(
    "calhooks_reconcile_entities",
    "Entities in the last complete listing of each kind.",
    ["kind"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "calhooks_reconcile_events",
    "Events reconciliation queued, by trigger.",
    ["trigger"],
    registry=REGISTRY,
)
