"""Connections as the rules see them: which organization an event is for, which rules run for
it, and the ``env`` its expressions see.

* ``Origin`` - the connection an event came through (PCID, name, tenant, org id), as the
  workers found it in the connection store; ``None`` wherever an origin is taken stands for
  the organization configured by the environment (``CALHOOKS_API_KEY``/``CALHOOKS_ORG_ID``);
* ``Audience`` - a rule's ``connections:`` (names or PCIDs) and ``tenants:``: the rule runs
  only for events of a named connection or of a connection in a named tenant. An empty
  audience (neither key) is every organization, the environment's included;
* ``ConnectionEnv`` - one entry of the file's top-level ``connections:`` map: the ``env``
  laid over the file's for the events of that connection (named by name or PCID);
* ``env_for`` - the ``env`` of one origin: the file's ``env`` (with ``CALHOOKS_RULES_ENV``
  over it), then the connection's entries (by name, then by PCID), then ``org_id`` - the
  connection's org id; the environment's ``CALHOOKS_ORG_ID`` never reaches a connection's
  events;
* ``reference_problems`` - the names a rules file uses that no stored connection or tenant
  has (``calhooks rules check``, when it can read the connection store).

A connection name is unique within its tenant only: ``connections: [acme]`` is every
connection named ``acme``, whatever its tenant (give the PCID to pick one).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # model imports this module (``Rule.audience``)
    from calhooks.workers.rules.model import Problem

#: The ``env`` name of the organization id (``orgId`` of tool calls that do not pass one).
ORG_ID = "org_id"


@dataclass(frozen=True, slots=True)
class Origin:
    """The connection an event came through."""

    pcid: str
    name: str
    tenant: str
    org_id: int | None = None

    def is_named(self, ref: str) -> bool:
        """Whether ``ref`` (a name or PCID in a rules file) designates this connection."""
        return ref in (self.pcid, self.name)


class AllOrigins:
    """``ALL``: every organization at once (``rule_triggers`` of the whole file)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ALL"


ALL = AllOrigins()


@dataclass(frozen=True, slots=True)
class Audience:
    """The organizations a rule runs for (empty: all of them)."""

    connections: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    #: The line of each name, by ``("connections" | "tenants", name)`` (for ``rules check``).
    lines: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @property
    def everyone(self) -> bool:
        return not self.connections and not self.tenants

    def includes(self, origin: Origin | None) -> bool:
        """Whether the rule runs for events of ``origin`` (``None``: the environment's org)."""
        if self.everyone:
            return True
        if origin is None:
            return False
        return any(origin.is_named(ref) for ref in self.connections) or (
            origin.tenant in self.tenants
        )

    def describe(self) -> str:
        """``for connections acme, globex or tenant agency`` (why a rule did not match)."""
        parts = []
        if self.connections:
            noun = "connection" if len(self.connections) == 1 else "connections"
            parts.append(f"{noun} {', '.join(self.connections)}")
        if self.tenants:
            noun = "tenant" if len(self.tenants) == 1 else "tenants"
            parts.append(f"{noun} {', '.join(self.tenants)}")
        return "for " + " or ".join(parts)


@dataclass(frozen=True, slots=True)
class ConnectionEnv:
    """``connections: {<ref>: {env: {...}}}``: the env of one connection's events."""

    ref: str
    env: Mapping[str, Any]
    line: int


def env_for(
    env: Mapping[str, Any], connections: Iterable[ConnectionEnv], origin: Origin | None
) -> dict[str, Any]:
    """The ``env`` the expressions of ``origin``'s events see (see the module docstring).

    ``env`` is the environment organization's: the file's, ``CALHOOKS_RULES_ENV`` and
    ``CALHOOKS_ORG_ID``.
    """
    if origin is None:
        return dict(env)
    merged = {name: value for name, value in env.items() if name != ORG_ID}
    entries = list(connections)
    for entry in entries:  # by name first, so that an entry by PCID is the last word
        if entry.ref == origin.name and entry.ref != origin.pcid:
            merged.update(entry.env)
    for entry in entries:
        if entry.ref == origin.pcid:
            merged.update(entry.env)
    merged.pop(ORG_ID, None)
    if origin.org_id is not None:
        merged[ORG_ID] = origin.org_id
    return merged


class StoredConnection(Protocol):
    """What ``reference_problems`` reads of a stored connection (``ConnectionInfo``)."""

    @property
    def pcid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tenant(self) -> str: ...


class HasAudience(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def audience(self) -> Audience: ...


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(choices)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reference_problems(
    source: str,
    rules: Iterable[HasAudience],
    connections: Iterable[ConnectionEnv],
    stored: Iterable[StoredConnection],
) -> list[Problem]:
    """A problem for every connection and tenant a rules file names that does not exist."""
    from calhooks.workers.rules.model import Problem

    known = list(stored)
    names = {info.name for info in known} | {info.pcid for info in known}
    tenants = {info.tenant for info in known}
    problems = []
    for entry in connections:
        if entry.ref not in names:
            problems.append(
                Problem(
                    source,
                    entry.line,
                    f"connections: no connection is named {entry.ref!r}"
                    f"{_suggest(entry.ref, names)}",
                )
            )
    for rule in rules:
        audience = rule.audience
        for ref in audience.connections:
            if ref not in names:
                problems.append(
                    Problem(
                        source,
                        audience.lines.get(("connections", ref), 0),
                        f"connections: no connection is named {ref!r}{_suggest(ref, names)}",
                        rule.name,
                    )
                )
        for tenant in audience.tenants:
            if tenant not in tenants:
                problems.append(
                    Problem(
                        source,
                        audience.lines.get(("tenants", tenant), 0),
                        f"tenants: no connection belongs to tenant {tenant!r}"
                        f"{_suggest(tenant, tenants)}",
                        rule.name,
                    )
                )
    return problems
