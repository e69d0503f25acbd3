"""Reconciliation: what Cal.com never delivered, and org changes it has no webhook for.

A run lists what the tools can list (``entities``) and the organization's bookings
(``bookings``), keeps a compact snapshot in Redis (``snapshot``), diffs each complete listing
against the last one and queues each difference as an event (``emit``) on the intake's queue;
``reconciler`` runs one pass within a call budget, ``periodic`` runs it inside the workers,
one worker at a time; ``triggers`` holds the event names (importing it loads nothing else);
``records`` the Redis keys and the pass history the console reads.
docs/reconciliation.md says what it recovers and what it cannot.
"""
