"""What a rules file becomes once loaded: rules, their steps, and the values steps pass on.

A ``Rule`` subscribes to one or more Cal.com triggers, may have a condition (``when``), and
runs its ``steps`` in order. A ``Step`` is one of three kinds:

* ``tool`` - calls one of the 37 Cal.com tools with parameters (``with``); its output is
  Cal.com's ``data``;
* ``log`` - writes a structured log line (``log`` is the message, ``with`` the fields);
  its output is the fields;
* ``let`` - computes named values for later steps, calling nothing; its output is them.

Parameter values are ``Template`` trees: a ``Constant`` (plain YAML), an ``Expression``
(``${{ expr }}`` as the whole value), ``Interpolated`` text, or lists and maps holding
any of these. Problems found while loading are ``Problem``s, raised together as one
``RulesError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from calhooks.workers.rules.expressions import Expression
from calhooks.workers.rules.scope import Audience

StepKind = Literal["tool", "log", "let"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Constant:
    """A literal value, used as written."""

    value: Any
    line: int


@dataclass(frozen=True, slots=True)
class Dynamic:
    """``${{ expr }}`` as a whole value: the expression's result, with its type."""

    expression: Expression
    line: int


@dataclass(frozen=True, slots=True)
class Interpolated:
    """Text with ``${{ }}`` inside: always a string."""

    parts: tuple[str | Expression, ...]
    line: int


@dataclass(frozen=True, slots=True)
class ListOf:
    """A YAML list with an expression somewhere inside."""

    items: tuple[Template, ...]
    line: int


@dataclass(frozen=True, slots=True)
class MapOf:
    """A YAML mapping with an expression somewhere inside."""

    items: tuple[tuple[str, Template], ...]
    line: int


Template = Constant | Dynamic | Interpolated | ListOf | MapOf


def template_expressions(template: Template) -> Iterator[Expression]:
    """Every expression inside ``template``."""
    if isinstance(template, Dynamic):
        yield template.expression
    elif isinstance(template, Interpolated):
        yield from (part for part in template.parts if isinstance(part, Expression))
    elif isinstance(template, ListOf):
        for item in template.items:
            yield from template_expressions(item)
    elif isinstance(template, MapOf):
        for _, item in template.items:
            yield from template_expressions(item)


@dataclass(frozen=True, eq=False)
class Step:
    """One step of a rule."""

    #: Where the step is in its rule, from 1.
    position: int
    line: int
    kind: StepKind
    #: The step's ``id`` (its output is ``steps.<id>``), if it has one.
    id: str | None = None
    #: Cal.com tool name (``tool`` steps).
    tool: str | None = None
    #: Tool parameters, log fields or let values, by name.
    values: Mapping[str, Template] = field(default_factory=dict)
    #: The log message (``log`` steps).
    message: Template | None = None
    level: LogLevel = "info"
    when: Expression | None = None
    for_each: Expression | None = None
    #: The loop variable of ``for_each`` (``as``; ``item`` by default).
    loop_variable: str | None = None
    #: Fetch every page of a list tool (``take``/``skip``) instead of the first.
    paginate: bool = False
    #: Seconds the workers may keep this read's answer in their shared cache (``cache:``).
    cache: float | None = None

    @property
    def key(self) -> str:
        """The step's name in calls, logs and the workers' ledger: its id, else ``#<n>``."""
        return self.id if self.id is not None else f"#{self.position}"

    @property
    def label(self) -> str:
        return f"step {self.id!r}" if self.id is not None else f"step #{self.position}"


@dataclass(frozen=True, eq=False)
class Rule:
    """One rule: which triggers, under what condition, doing which steps."""

    name: str
    line: int
    triggers: tuple[str, ...]
    steps: tuple[Step, ...]
    when: Expression | None = None
    description: str = ""
    #: The connections and tenants it runs for (``connections:``, ``tenants:``; empty: all).
    audience: Audience = field(default_factory=Audience)

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, on={list(self.triggers)})"


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong in a rules file, located as precisely as known."""

    source: str
    line: int
    message: str
    rule: str | None = None
    step: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        context = []
        if self.rule is not None:
            context.append(f"rule {self.rule!r}")
        if self.step is not None:
            context.append(self.step)
        prefix = f"{where}: " + (" ".join(context) + ": " if context else "")
        return prefix + self.message


class RulesError(ValueError):
    """A rules file that cannot be used; lists every problem found (the file is rejected)."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.line, p.message)))
        count = len(self.problems)
        heading = f"{count} problem{'s' if count != 1 else ''} in the rules"
        super().__init__("\n".join([heading, *(f"  {p}" for p in self.problems)]))
