"""``RuleSet``: a loaded, valid rules file - which rules an event matches, and running them.

The workers hold one ``RuleSet`` at a time (a file that fails to load leaves the previous
one in force); webhook sync subscribes to ``RuleSet.triggers``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from calhooks.workers.rules.evaluation import (
    BudgetExceeded,
    EvaluationError,
    check_cost,
    evaluate,
    to_text,
)
from calhooks.workers.rules.expressions import compact
from calhooks.workers.rules.model import Rule
from calhooks.workers.rules.runner import (
    EventContext,
    EventLike,
    Invoke,
    Limits,
    Log,
    RuleFailed,
    RuleResult,
    logger,
    run_rule,
)
from calhooks.workers.rules.scope import ConnectionEnv, Origin, env_for


@dataclass(frozen=True, slots=True)
class Match:
    """Whether one rule matches an event, and if not, why."""

    rule: Rule
    matched: bool
    reason: str | None = None


@dataclass(frozen=True, eq=False)
class RuleSet:
    """The rules of one file, in file order, with the ``env`` their expressions see.

    ``env`` is the environment organization's; ``connections`` (the file's ``connections:``)
    changes it for a connection's events (``env_for``).
    """

    rules: tuple[Rule, ...] = ()
    env: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<rules>"
    limits: Limits = field(default_factory=Limits)
    connections: tuple[ConnectionEnv, ...] = ()

    @cached_property
    def triggers(self) -> frozenset[str]:
        """Every trigger some rule runs on: what the org webhook must subscribe to."""
        return frozenset(trigger for rule in self.rules for trigger in rule.triggers)

    @cached_property
    def _by_name(self) -> dict[str, Rule]:
        return {rule.name: rule for rule in self.rules}

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def named(self, name: str) -> Rule | None:
        return self._by_name.get(name)

    def env_for(self, origin: Origin | None) -> dict[str, Any]:
        """The ``env`` of the events of ``origin`` (``None``: the environment's org)."""
        return env_for(self.env, self.connections, origin)

    def context(self, event: EventLike, origin: Origin | None = None) -> EventContext:
        return EventContext.of(event, self.env_for(origin))

    def evaluate(
        self, event: EventLike, *, log: Log | None = None, origin: Origin | None = None
    ) -> list[Match]:
        """Every rule with whether it matches ``event`` and, when it does not, the reason.

        A rule matches when it runs on the event's trigger, is for the event's organization
        (``origin``: its connection; ``None``, the environment's) and its ``when`` is true. A
        ``when`` that cannot be evaluated (a field this delivery lacks, a null where a map
        was expected ...) does not match; the reason is logged, nothing is raised.
        """
        log = (log or logger).bind(event_id=event.id, trigger=event.trigger)
        context = None
        sizes: dict[str, int] | None = None
        matches = []
        for rule in self.rules:
            if event.trigger not in rule.triggers:
                matches.append(Match(rule, False, f"runs on {', '.join(rule.triggers)}"))
                continue
            if not rule.audience.includes(origin):
                matches.append(Match(rule, False, f"runs {rule.audience.describe()}"))
                continue
            if rule.when is None:
                matches.append(Match(rule, True))
                continue
            try:
                sizes = sizes if sizes is not None else self.context(event, origin).sizes()
                check_cost(rule.when, sizes, self.limits.cost)
            except BudgetExceeded as error:
                # Matched, so that running it fails it with this reason (a dead letter).
                matches.append(Match(rule, True, f"when: {error}"))
                continue
            try:
                context = context or self.context(event, origin).cel_context()
                value = evaluate(rule.when, context)
            except EvaluationError as error:
                matches.append(Match(rule, False, f"when: {error.reason}"))
            else:
                if value is True:
                    matches.append(Match(rule, True))
                elif value is False:
                    reason = f"when is false: {compact(rule.when.source)}"
                    matches.append(Match(rule, False, reason))
                else:
                    reason = f"when gave {compact(to_text(value))!r}, not true or false"
                    matches.append(Match(rule, False, reason))
        for match in matches:
            if match.matched:
                log.info("rule.matched", rule=match.rule.name)
            elif event.trigger in match.rule.triggers and match.rule.audience.includes(origin):
                log.info("rule.not_matched", rule=match.rule.name, reason=match.reason)
        return matches

    def matching(
        self,
        event: EventLike,
        *,
        log: Log | None = None,
        why_not: dict[str, str] | None = None,
        origin: Origin | None = None,
    ) -> list[Rule]:
        """The rules ``event`` matches, in file order; ``why_not`` gets the others' reasons."""
        matches = self.evaluate(event, log=log, origin=origin)
        if why_not is not None:
            why_not.update({m.rule.name: m.reason or "" for m in matches if not m.matched})
        return [match.rule for match in matches if match.matched]

    async def run(
        self,
        rule: Rule,
        event: EventLike,
        invoke: Invoke,
        *,
        log: Log | None = None,
        origin: Origin | None = None,
    ) -> RuleResult:
        """Run ``rule`` for ``event`` of ``origin`` (see ``run_rule``); ``RuleFailed`` when a
        step fails."""
        bound = (log or logger).bind(event_id=event.id, trigger=event.trigger)
        context = self.context(event, origin)
        if rule.when is not None:
            try:
                check_cost(rule.when, context.sizes(), self.limits.cost)
            except BudgetExceeded as error:
                message = f"when: {error}"
                bound.warning("rule.failed", rule=rule.name, error=message)
                raise RuleFailed(
                    RuleResult(rule.name, error=message), "(when)", None, message
                ) from error
        return await run_rule(rule, context, invoke, log=bound, limits=self.limits)
