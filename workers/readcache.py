"""The workers' shared read cache: what a rule step with ``cache: <duration>`` reads.

A rule opts a read step in (``cache: 10m`` on a step calling a GET tool; the loader refuses
it anywhere else). Its answer is kept in Redis, shared by every worker, under the tool, its
parameters (``orgId`` included, so the organization too) and the *generations* of the
entities the read depends on. Nothing else - the CLI, the MCP server, steps without
``cache`` - ever reads it.

**Entities** come from the registry's paths (``/v2/organizations/{orgId}/<...>``):

* a read depends on every collection its path names (``users/{userId}/ooo``: users and
  ooo) and on the collections its id parameters name (``assignedOptionIds``: options);
* a write changes the collection its path ends in (``users/{userId}/ooo/{oooId}``: ooo),
  and the user its path names when not under ``users/`` (``attributes/options/{userId}``,
  assigning an attribute option, changes what the users list shows of that user);
* ``memberships`` and ``users`` are one entity: Cal.com's organization users are its
  memberships (creating or deleting one creates or deletes the other).

The events of a connection (``workers.clients``) keep their entries apart, under the
connection's PCID and ``orgId``: two Cal.com deployments may both have an org 1.

**Invalidation** bumps an entity's generation (one counter per organization and entity):
a write made by calhooks (``invalidate(org, write_entities(tool))`` after it succeeds) and
an event whose trigger names the entity (``OOO_CREATED``: ooo; Cal.com's user or
membership triggers, should it send them). Entries stored under an older generation are
never read again and expire. A read that started before a write and ends after it stores
its answer under the old generation, so it cannot bring a stale answer back.

**Single flight**: the first worker to miss takes a lease (``SET NX PX``, as long as a
call may take: the rate limit's longest wait plus Cal.com's timeout) and calls Cal.com;
the others wait on the entry (polling with a deadline) and share its answer. A lease
whose holder failed or vanished lets the next waiter lead; past the deadline a waiter
calls Cal.com itself. A Redis failure never fails the step: the read is made
directly.

Staleness: a change made in Cal.com by something other than calhooks, for which Cal.com
sends no event, is seen only once the entry expires (the step's duration).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import cache
from typing import Any, Literal

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from calhooks.service.calcom.tools import TOOLS, Tool
from calhooks.workers import keys
from calhooks.workers.reconcile.triggers import PREFIX as RECONCILE_PREFIX

logger = structlog.get_logger(__name__)

CacheHow = Literal["hit", "miss", "shared", "bypassed"]

#: Longest a rule may cache a read; also how long an entity's generation outlives its last
#: change (longer than any entry stored under it).
MAX_TTL = 24 * 3600.0
#: How long a waiter waits for the leader's answer before calling Cal.com itself.
DEFAULT_WAIT = 10.0

_ORG_PREFIX = "/v2/organizations/{orgId}/"
_PLACEHOLDER = re.compile(r"^{(\w+)}$")
_CAMEL = re.compile(r"[A-Z]?[a-z]+")
#: One entity, two collections: an organization user is a membership of the organization.
_SAME = {"memberships": "users"}

# KEYS: the read's entity generation keys. ARGV: key stem, lease ms, lease token.
# Returns {entry key, "hit", value} | {entry key, "lead"} | {entry key, "wait"}.
_LOOKUP = """
local gens = {}
for i, key in ipairs(KEYS) do gens[i] = redis.call('GET', key) or '0' end
local entry = ARGV[1] .. ':' .. table.concat(gens, '.')
local value = redis.call('GET', entry)
if value then return {entry, 'hit', value} end
if redis.call('SET', entry .. ':flight', ARGV[3], 'NX', 'PX', ARGV[2]) then
  return {entry, 'lead'}
end
return {entry, 'wait'}
"""


def _entity(name: str) -> str:
    return _SAME.get(name, name)


def _segments(tool: Tool) -> list[str]:
    path = tool.path
    rest = path[len(_ORG_PREFIX) :] if path.startswith(_ORG_PREFIX) else path.strip("/")
    return [part for part in rest.split("/") if part]


@cache
def known_entities() -> frozenset[str]:
    """Every collection the registry's paths name."""
    return frozenset(
        _entity(part)
        for tool in TOOLS.values()
        for part in _segments(tool)
        if not _PLACEHOLDER.match(part)
    )


def _named_by(parameter: str) -> str | None:
    """The entity an id parameter names: ``userId`` users, ``assignedOptionIds`` options."""
    for suffix in ("Ids", "Id"):
        if parameter.endswith(suffix) and len(parameter) > len(suffix):
            words = _CAMEL.findall(parameter[: -len(suffix)])
            if words:
                name = _entity(words[-1].lower() + "s")
                return name if name in known_entities() else None
    return None


@cache
def read_entities(tool: Tool) -> tuple[str, ...]:
    """What a read's answer depends on (sorted; see the module docstring)."""
    found = {_entity(part) for part in _segments(tool) if not _PLACEHOLDER.match(part)}
    found.update(e for p in tool.parameters if (e := _named_by(p.name)) is not None)
    return tuple(sorted(found))


@cache
def write_entities(tool: Tool) -> tuple[str, ...]:
    """What a write changes (sorted; see the module docstring)."""
    segments = _segments(tool)
    literal = [part for part in segments if not _PLACEHOLDER.match(part)]
    found = {_entity(literal[-1])} if literal else set()
    for before, part in itertools.pairwise(segments):
        if part == "{userId}" and _entity(before) != "users":
            found.add("users")
    return tuple(sorted(found))


def trigger_entities(trigger: str) -> tuple[str, ...]:
    """The entities an event changes, from the words of its trigger before the verb
    (``OOO_CREATED``: ooo; reconciliation's ``calhooks.MEMBERSHIP_ROLE_CHANGED``: users;
    ``calhooks.ATTRIBUTE_OPTION_ASSIGNED``: attributes, options and users - an assignment
    changes its user, as the assigning write does)."""
    *words, verb = trigger.removeprefix(RECONCILE_PREFIX).lower().split("_")
    if verb in ("assigned", "unassigned"):
        words.append("user")
    names = {_entity(word) for word in words} | {_entity(word + "s") for word in words}
    return tuple(sorted(names & known_entities()))


def _stem(tool: Tool, params: Mapping[str, Any], org: str | None) -> tuple[str, str]:
    org = str(params.get("orgId", "-")) if org is None else org
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{tool.name}\n{canonical}".encode()).hexdigest()[:32]
    return org, keys.read_cache_entry(org, tool.name, digest)


class ReadCache:
    """Cached, single-flight reads and their invalidation, on the workers' Redis."""

    def __init__(self, redis: aioredis.Redis, *, wait: float = DEFAULT_WAIT) -> None:
        self.redis = redis
        self.wait = wait
        self._lookup = redis.register_script(_LOOKUP)

    async def read(
        self,
        tool: Tool,
        params: Mapping[str, Any],
        ttl: float,
        perform: Callable[[], Awaitable[Any]],
        *,
        org: str | None = None,
    ) -> tuple[Any, CacheHow]:
        """``perform()``'s answer, from the cache when an entry is there (``params`` complete:
        with the ``orgId`` the call is sent with; ``org``, the organization's name in the
        cache's keys when it is not that ``orgId``: a connection's)."""
        org, stem = _stem(tool, params, org)
        generations = [keys.read_cache_generation(org, e) for e in read_entities(tool)]
        lease_ms = int(self.wait * 1000)
        deadline = time.monotonic() + self.wait
        pause = 0.002
        while True:
            token = uuid.uuid4().hex
            try:
                reply = await self._lookup(keys=generations, args=[stem, lease_ms, token])
            except RedisError as exc:
                logger.warning("read_cache.unavailable", tool=tool.name, error=str(exc))
                return await perform(), "bypassed"
            entry, status = reply[0].decode(), reply[1].decode()
            if status == "hit":
                return json.loads(reply[2]), "hit"
            if status == "lead":
                return await self._lead(entry, token, ttl, perform), "miss"
            while time.monotonic() < deadline:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.025)
                try:
                    value, leader = await self.redis.mget([entry, entry + ":flight"])
                except RedisError:
                    break
                if value is not None:
                    return json.loads(value), "shared"
                if leader is None:
                    break  # the leader failed: look again (perhaps lead)
            if time.monotonic() >= deadline:
                logger.info("read_cache.wait_expired", tool=tool.name)
                return await perform(), "bypassed"

    async def _lead(
        self, entry: str, token: str, ttl: float, perform: Callable[[], Awaitable[Any]]
    ) -> Any:
        try:
            output = await perform()
        except BaseException:
            await self._release(entry, token)
            raise
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(entry, json.dumps(output, separators=(",", ":")), px=int(ttl * 1000))
                pipe.delete(entry + ":flight")
                await pipe.execute()
        except RedisError as exc:
            logger.warning("read_cache.store_failed", error=str(exc))
        return output

    async def _release(self, entry: str, token: str) -> None:
        try:
            if await self.redis.get(entry + ":flight") == token.encode():
                await self.redis.delete(entry + ":flight")
        except RedisError:
            pass  # the lease lapses by itself

    async def invalidate(self, org: Any, entities: Iterable[str]) -> None:
        """Entries of ``org`` that depend on ``entities`` are never read again."""
        names = list(entities)
        if not names:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    key = keys.read_cache_generation(str(org), name)
                    pipe.incr(key)
                    pipe.expire(key, int(MAX_TTL) * 2)
                await pipe.execute()
        except RedisError as exc:
            logger.warning("read_cache.invalidate_failed", entities=names, error=str(exc))
