"""The recent-events index the console lists: one summary per event, newest first.

The workers write an event's summary at the end of every attempt, in the pipeline that ends
it (no round trip of its own): ``calhooks:events:index`` (a sorted set, id by time received)
and ``calhooks:events:summary:<id>`` (JSON: id, trigger, booking uid, received_at, outcome,
rules with their outcomes, attempts, updated_at). Summaries expire with the worker records
(``CALHOOKS_WORKER_RECORD_TTL``); the index is trimmed to ``MAX_EVENTS`` and to that age.
The same ids are indexed by outcome (``calhooks:events:index:outcome:<outcome>``, moved
when the outcome changes) and by trigger (``...:trigger:<trigger>``), so those filters read
only matching events. Looking an id up by prefix reads one small sorted set,
``calhooks:events:by-prefix:<first four characters>`` (trimmed to the same age, expiring with
its last event), not the index.

Outcomes: ``running`` (no rule decided yet), ``retrying`` (a rule will be tried again),
``done`` (every matched rule done or skipped), ``no_rule`` (nothing matched),
``dead_lettered`` (a rule is in the dead-letter queue).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

INDEX_KEY = "calhooks:events:index"
SUMMARY_PREFIX = "calhooks:events:summary:"
BUCKET_PREFIX = "calhooks:events:by-prefix:"
#: Id characters that name a prefix bucket: ids are hex, so 65,536 buckets.
BUCKET_CHARS = 4
MAX_EVENTS = 200_000
OUTCOMES = ("running", "retrying", "done", "no_rule", "dead_lettered")


def summary_key(event_id: str) -> str:
    return SUMMARY_PREFIX + event_id


def outcome_key(outcome: str) -> str:
    return f"{INDEX_KEY}:outcome:{outcome}"


def trigger_key(trigger: str) -> str:
    return f"{INDEX_KEY}:trigger:{trigger}"


def bucket_key(id_or_prefix: str) -> str:
    """The prefix bucket of an id (or of a prefix of ``BUCKET_CHARS``+ characters)."""
    return BUCKET_PREFIX + id_or_prefix[:BUCKET_CHARS].lower()


def outcome_of(matched: Sequence[str] | None, rules: Mapping[str, str]) -> str:
    """An event's outcome from its matched rules and their outcomes so far (the ledger's)."""
    if matched is None:
        return "running"
    if any(outcome == "dead" for outcome in rules.values()):
        return "dead_lettered"
    if any(rule not in rules for rule in matched):
        return "retrying"
    return "done" if matched else "no_rule"


def write_into(pipe: Any, summary: Mapping[str, Any], *, ttl: int) -> None:
    """Add one event's summary (``id`` and ``received_at`` required) to ``pipe``."""
    event_id = str(summary["id"])
    received = float(summary["received_at"])
    pipe.set(
        summary_key(event_id),
        json.dumps({**summary, "updated_at": round(time.time(), 3)}, separators=(",", ":")),
        ex=ttl,
    )
    oldest = f"({time.time() - ttl}"
    outcome = str(summary.get("outcome", ""))
    for other in OUTCOMES:
        if other != outcome:
            pipe.zrem(outcome_key(other), event_id)
    for key in (INDEX_KEY, outcome_key(outcome), trigger_key(str(summary.get("trigger", "")))):
        pipe.zadd(key, {event_id: received})
        pipe.zremrangebyrank(key, 0, -MAX_EVENTS - 1)
        pipe.zremrangebyscore(key, "-inf", oldest)
    bucket = bucket_key(event_id)
    pipe.zadd(bucket, {event_id: received})
    pipe.zremrangebyscore(bucket, "-inf", oldest)
    pipe.expire(bucket, ttl)
