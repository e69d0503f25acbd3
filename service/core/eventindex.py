"""The recent-events index the console lists: one summary per event, newest first.

The workers write an event's summary at the end of every attempt, in the pipeline that ends
it (no round trip of its own): ``calhooks:events:index`` (a sorted set, id by time received)
and ``calhooks:events:summary:<id>`` (JSON: id, trigger, booking uid, received_at, outcome,
rules with their outcomes, attempts, updated_at). Summaries expire with the worker records
(``CALHOOKS_WORKER_RECORD_TTL``); the index is trimmed to ``MAX_EVENTS`` and to that age.

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
MAX_EVENTS = 200_000
OUTCOMES = ("running", "retrying", "done", "no_rule", "dead_lettered")


def summary_key(event_id: str) -> str:
    return SUMMARY_PREFIX + event_id


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
    pipe.zadd(INDEX_KEY, {event_id: received})
    pipe.zremrangebyrank(INDEX_KEY, 0, -MAX_EVENTS - 1)
    pipe.zremrangebyscore(INDEX_KEY, "-inf", f"({time.time() - ttl}")
