"""Format versions of what the workers read and keep, for rolling upgrades.

During a Kubernetes rolling update, intakes and workers of two releases share one Redis. Each
record therefore says which format it is in, and a reader handles every format up to its own
and leaves newer ones alone instead of misreading them:

* the job's event (``calhooks.service.events.EVENT_FORMAT``, field ``v`` of the job argument):
  a worker re-queues a job in a newer format for ``NEWER_FORMAT_DEFER`` seconds (a worker
  of the newer release takes it meanwhile), without touching the event's records;
* the step ledger (``LEDGER_FORMAT``, hash field ``v``): an attempt finding a newer ledger is
  deferred the same way;
* dead-letter entries (``DEAD_LETTER_FORMAT``, field ``v``): listed whatever their format,
  replayed only by a release that knows it;
* the delivery log (``EVENTLOG_FORMAT``, field ``v`` of each ``attempt`` record): records are
  only displayed; unknown kinds and fields are shown as they are.

A record without ``v`` was written before versioning (release 52bd3ec and earlier) and is
format 1: the fields are the same. A release that changes a format increments its number here
and keeps reading the formats before it.
"""

from __future__ import annotations

from calhooks.service.events import EVENT_FORMAT, NewerFormat, record_format

LEDGER_FORMAT = 1
DEAD_LETTER_FORMAT = 1
EVENTLOG_FORMAT = 1
#: Seconds a job or attempt in a newer format waits before it is looked at again.
NEWER_FORMAT_DEFER = 30.0

__all__ = [
    "DEAD_LETTER_FORMAT",
    "EVENTLOG_FORMAT",
    "EVENT_FORMAT",
    "LEDGER_FORMAT",
    "NEWER_FORMAT_DEFER",
    "NewerFormat",
    "record_format",
]
