"""Every Redis key the workers own, in one place (all under the ``calhooks:`` prefix).

arq's own keys (``arq:job:<id>``, ``arq:result:<id>``, the queue sorted set) and the intake's
keys are not listed here; the workers touch arq's only where arq has no API for it.
"""

from __future__ import annotations

PREFIX = "calhooks:"


def ledger(event_id: str) -> str:
    """Hash of an event's step records, rule states and attempt counters."""
    return f"{PREFIX}ledger:{event_id}"


def eventlog(event_id: str) -> str:
    """List of JSON records: what happened to an event, in order."""
    return f"{PREFIX}eventlog:{event_id}"


def dead_letters() -> str:
    """Hash of dead-letter entries by id."""
    return f"{PREFIX}dlq"


def dead_letter_index() -> str:
    """Sorted set of dead-letter ids scored by when they were dead-lettered."""
    return f"{PREFIX}dlq:index"


def rate_limit(bucket: str) -> str:
    """Hash of one Cal.com account's rate-limit state: a block, a learned lower limit."""
    return f"{PREFIX}ratelimit:{bucket}"


def rate_limit_log(bucket: str) -> str:
    """Sorted set of the send times (and reservations) of one account's requests."""
    return f"{PREFIX}ratelimit:{bucket}:log"


def booking_prefix(connection: str | None = None) -> str:
    """What the booking keys of one organization start with: the environment organization's
    (``calhooks:booking:``) or a connection's (``calhooks:conn:<pcid>:booking:``) - two
    organizations' bookings with the same uid are different bookings."""
    return f"{PREFIX}booking:" if connection is None else f"{PREFIX}conn:{connection}:booking:"


def booking(uid: str, connection: str | None = None) -> str:
    """Hash of what the workers have processed about one booking (created, cancelled...)."""
    return booking_prefix(connection) + uid


def booking_lock(uid: str, connection: str | None = None) -> str:
    """Lock serializing the events of one booking."""
    return f"{booking(uid, connection)}:lock"


def booking_pending(uid: str, connection: str | None = None) -> str:
    """Sorted set of a booking's events being processed, scored by arrival time."""
    return f"{booking(uid, connection)}:pending"


def arq_result(job_id: str) -> str:
    return f"arq:result:{job_id}"


def read_cache_entry(org: str, tool: str, digest: str) -> str:
    """Stem of a cached read's key (``:<generations>`` follows; ``:flight`` is its lease)."""
    return f"{PREFIX}cache:{org}:{tool}:{digest}"


def read_cache_generation(org: str, entity: str) -> str:
    """Counter bumped when an organization's entity (users, ooo...) changes."""
    return f"{PREFIX}cache:gen:{org}:{entity}"
