"""Reconciliation's records in Redis: key names, the pass history, recent events, run requests.

Each organization has its own keys (``key_prefix``): the environment's organization
(``CALHOOKS_ORG_ID``, an ``int``) under ``calhooks:reconcile:<org id>:`` as always, a
connection (its PCID, a ``str``) under ``calhooks:conn:<pcid>:reconcile:`` - two connections
of one org id never share a snapshot, a lock or a history. The reconciler and the
periodic pass write; the console reads (``read_status``) and asks for a pass
(``request_run``) through this module only - it imports nothing of reconciliation's runtime
(the import contracts in ``pyproject.toml``). Keys:

* ``state`` (hash), ``snap:<kind>`` / ``next:<kind>`` (hashes): the reconciler's own (see
  ``reconciler``); a kind whose snapshot exists has ``<kind>:baseline`` in ``state``;
* ``due`` and ``lock``: the period's claim and the pass' lock (``periodic``); the lock's
  value is ``<token> <holder>`` (the worker's name, or ``calhooks reconcile`` and its host);
* ``passes`` (list, newest first, ``PASSES_KEPT`` kept): one JSON record per pass, done or
  failed (``PassRecord``); dry runs are not recorded;
* ``events`` (list, newest first, ``EVENTS_KEPT`` kept): the events passes queued (id,
  trigger, what it is about, when), duplicates not counted;
* ``run`` (string, ``RUN_REQUEST_TTL``): a pass asked for now (by the console's operator);
  the next worker to check takes it (``GETDEL``) and runs a pass at once.

Across organizations: ``calhooks:reconcile:passes`` (``ALL_PASSES_KEY``, list, newest first,
``PASSES_KEPT`` kept) holds every organization's passes, each naming its organization, for the
console.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from calhooks.workers.keys import PREFIX

#: Passes kept in the history.
PASSES_KEPT = 50
#: Queued events kept in the recent list.
EVENTS_KEPT = 200
#: How long a pass asked for waits for a worker to take it.
RUN_REQUEST_TTL = 3600


#: An organization: the environment's org id (``int``) or a connection's PCID (``str``).
Org = int | str
#: Every organization's passes, newest first.
ALL_PASSES_KEY = f"{PREFIX}reconcile:passes"


def key_prefix(org: Org) -> str:
    """Where an organization's keys live (see the module docstring)."""
    if isinstance(org, str):
        return f"{PREFIX}conn:{org}:reconcile:"
    return f"{PREFIX}reconcile:{org}:"


def organization_label(org: Org, name: str | None = None) -> str:
    """How the history names an organization: ``environment (org 1)`` or a connection's
    name and PCID."""
    if isinstance(org, str):
        return f"{name or org} ({org})"
    return f"environment (org {org})"


def state_key(org: Org) -> str:
    return key_prefix(org) + "state"


def snapshot_key(org: Org, kind: str) -> str:
    return key_prefix(org) + f"snap:{kind}"


def staging_key(org: Org, kind: str) -> str:
    return key_prefix(org) + f"next:{kind}"


def lock_key(org: Org) -> str:
    return key_prefix(org) + "lock"


def due_key(org: Org) -> str:
    return key_prefix(org) + "due"


def passes_key(org: Org) -> str:
    return key_prefix(org) + "passes"


def events_key(org: Org) -> str:
    return key_prefix(org) + "events"


def run_key(org: Org) -> str:
    return key_prefix(org) + "run"


def this_process() -> str:
    """A holder name for a pass run by this process: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def lock_value(holder: str) -> str:
    """A fresh lock value naming its holder (the token makes it unique to one pass)."""
    return f"{uuid.uuid4().hex} {holder}"


def lock_holder(value: bytes | str | None) -> str | None:
    """The holder a lock value names (``None``: no lock; a value without one: itself)."""
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    token, _, holder = text.partition(" ")
    return holder or token


@dataclass
class PassRecord:
    """One pass as the history keeps it."""

    started: float
    duration: float
    outcome: str  # "done" or "failed"
    holder: str
    calls: int
    budget: int | None
    #: Entities in each complete listing, by kind.
    seen: dict[str, int] = field(default_factory=dict)
    #: Events queued, by trigger (duplicates of an earlier pass' are not counted).
    events: dict[str, int] = field(default_factory=dict)
    #: Events found that were queued already (a pass that crashed half way, run again).
    duplicates: int = 0
    complete: list[str] = field(default_factory=list)
    baselined: list[str] = field(default_factory=list)
    #: The kind whose listing continues next pass (the budget ran out).
    pending: str | None = None
    error: str | None = None
    #: The organization (``organization_label``); ``""`` in records older than connections.
    organization: str = ""
    #: The connection's PCID (``None``: the environment's organization).
    connection: str | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> PassRecord | None:
        try:
            data = json.loads(raw)
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class QueuedEvent:
    """One event a pass queued, as the recent list keeps it."""

    id: str
    trigger: str
    #: What it is about: ``booking <uid>``, or ``<kind> <id>``.
    subject: str
    at: float


async def add_pass(redis: aioredis.Redis, org: Org, record: PassRecord) -> None:
    """Keep a pass in its organization's history and in the one across organizations."""
    item = json.dumps(asdict(record), separators=(",", ":"))
    async with redis.pipeline(transaction=True) as pipe:
        for key in (passes_key(org), ALL_PASSES_KEY):
            pipe.lpush(key, item)
            pipe.ltrim(key, 0, PASSES_KEPT - 1)
        await pipe.execute()


async def read_all_passes(redis: aioredis.Redis, count: int = 20) -> list[PassRecord]:
    """The last ``count`` passes of every organization, newest first."""
    raw = await redis.lrange(ALL_PASSES_KEY, 0, count - 1)  # type: ignore[misc]
    return [r for r in map(PassRecord.from_json, raw) if r is not None]


async def add_events(redis: aioredis.Redis, org: Org, events: Iterable[QueuedEvent]) -> None:
    items = [json.dumps(asdict(e), separators=(",", ":")) for e in events]
    if not items:
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(events_key(org), *items)
        pipe.ltrim(events_key(org), 0, EVENTS_KEPT - 1)
        await pipe.execute()


async def request_run(redis: aioredis.Redis, org: Org, who: str) -> None:
    """Ask the workers for a pass now (kept ``RUN_REQUEST_TTL`` for a worker to take it)."""
    await redis.set(run_key(org), who, ex=RUN_REQUEST_TTL)


async def take_run_request(redis: aioredis.Redis, org: Org) -> str | None:
    """Who asked for a pass now, taking the request (one worker gets it); ``None``: nobody."""
    value = await redis.getdel(run_key(org))
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class Status:
    """Reconciliation's state for one organization, as the console shows it."""

    org_id: Org
    passes: list[PassRecord]
    total_passes: int
    #: Who holds the lock (a pass is running), and for how long at most (seconds).
    holder: str | None
    lock_left: float | None
    #: Seconds until the current period ends and a worker may claim the next pass
    #: (``None``: no period claimed, a worker claims one at its next check).
    due_in: float | None
    #: Who asked for a pass now, not taken by a worker yet.
    requested_by: str | None
    #: Entities in each kind's snapshot; the kind being gathered over passes, with its count.
    snapshot: dict[str, int]
    gathering: dict[str, int]
    events: list[QueuedEvent]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def read_status(
    redis: aioredis.Redis, org_id: Org, *, passes: int = 20, events: int = 50
) -> Status:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lrange(passes_key(org_id), 0, passes - 1)
        pipe.hgetall(state_key(org_id))
        pipe.get(lock_key(org_id))
        pipe.pttl(lock_key(org_id))
        pipe.pttl(due_key(org_id))
        pipe.get(run_key(org_id))
        pipe.lrange(events_key(org_id), 0, events - 1)
        raw_passes, raw_state, lock, lock_ms, due_ms, requested, raw_events = await pipe.execute()
    state = {_text(k): _text(v) for k, v in raw_state.items()}
    kinds = sorted(k.removesuffix(":baseline") for k in state if k.endswith(":baseline"))
    gathering_kinds = sorted(k.removesuffix(":skip") for k in state if k.endswith(":skip"))
    async with redis.pipeline(transaction=False) as pipe:
        for kind in kinds:
            pipe.hlen(snapshot_key(org_id, kind))
        for kind in gathering_kinds:
            pipe.hlen(staging_key(org_id, kind))
        sizes = await pipe.execute()
    recent = []
    for item in raw_events:
        try:
            recent.append(QueuedEvent(**json.loads(item)))
        except (ValueError, TypeError):
            continue
    return Status(
        org_id=org_id,
        passes=[r for r in map(PassRecord.from_json, raw_passes) if r is not None],
        total_passes=int(state.get("passes", 0) or 0),
        holder=lock_holder(lock),
        lock_left=lock_ms / 1000 if lock is not None and lock_ms > 0 else None,
        due_in=due_ms / 1000 if due_ms > 0 else None,
        requested_by=_text(requested) if requested is not None else None,
        snapshot=dict(zip(kinds, map(int, sizes[: len(kinds)]), strict=True)),
        gathering=dict(zip(gathering_kinds, map(int, sizes[len(kinds) :]), strict=True)),
        events=recent,
    )


def counts(triggers: Iterable[str]) -> dict[str, int]:
    """How many of each trigger, in order of first appearance."""
    found: dict[str, int] = {}
    for trigger in triggers:
        found[trigger] = found.get(trigger, 0) + 1
    return found


def subject_of(payload: Mapping[str, Any]) -> str:
    """What an event reconciliation made is about (a booking's uid, or a kind and id)."""
    if "kind" in payload:
        return f"{payload.get('kind')} {payload.get('id')}"
    return f"booking {payload.get('uid')}"
