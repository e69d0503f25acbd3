"""What a rules file would do with one event: per rule, matched or why not, and the calls.

``dry_run(rules, event)`` runs every matching rule with an ``invoke`` that calls nothing:
each call is recorded with its fully evaluated parameters and answers ``Unknown``, so a
parameter computed from an earlier call's output shows as ``<unknown until run: ...>``
and a condition on one as "decided when run". Pass an ``invoke`` that makes the calls for
real - ``calhooks rules test --against sandbox`` passes one calling a sandbox Cal.com - to
see real outputs flow into later steps. The rules engine never holds an HTTP client itself.

``format_report`` renders the result for a terminal; ``DryRunReport.to_dict`` as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from calhooks.workers.rules.ruleset import RuleSet
from calhooks.workers.rules.runner import (
    EventLike,
    Invoke,
    RuleFailed,
    RuleResult,
    StepCall,
    StepOutcome,
    Unknown,
    run_rule,
)
from calhooks.workers.rules.scope import Origin

#: What a dry run shows for ``orgId`` when neither the step nor ``env.org_id`` sets it.
ORG_ID_UNKNOWN = "orgId: CALHOOKS_ORG_ID is not set"
#: Longest output shown per step in the text report (the JSON report has it all).
OUTPUT_PREVIEW = 400


class QuietLog:
    """A ``Log`` that drops everything: the report shows what the log steps would write."""

    def bind(self, **_: Any) -> QuietLog:
        return self

    def debug(self, event: str, **values: Any) -> None:
        return None

    info = warning = error = debug


async def record_only(call: StepCall) -> Unknown:
    """The dry run's ``invoke``: calls nothing; the output is unknown until a real run."""
    return Unknown(f"output of {call.step}")


@dataclass
class RuleReport:
    name: str
    matched: bool
    reason: str | None = None
    result: RuleResult | None = None
    error: str | None = None


@dataclass
class DryRunReport:
    event_id: str
    trigger: str
    rules: list[RuleReport] = field(default_factory=list)
    #: ``event.source``: ``"webhook"``, or ``"reconcile"`` for an event reconciliation made.
    source: str = "webhook"

    @property
    def failed(self) -> bool:
        return any(rule.error is not None for rule in self.rules)

    @property
    def matched(self) -> list[RuleReport]:
        return [rule for rule in self.rules if rule.matched]

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": {"id": self.event_id, "trigger": self.trigger, "source": self.source},
            "rules": [
                {
                    "rule": rule.name,
                    "matched": rule.matched,
                    "reason": rule.reason,
                    "error": rule.error,
                    "steps": [_outcome_dict(o) for o in rule.result.outcomes]
                    if rule.result
                    else [],
                }
                for rule in self.rules
            ],
        }


def _shown(value: Any) -> Any:
    """``value`` with ``Unknown``s as their text, for printing."""
    if isinstance(value, Unknown):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _shown(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(item) for item in value]
    return value


def _outcome_dict(outcome: StepOutcome) -> dict[str, Any]:
    data = {
        "step": outcome.step,
        "index": outcome.index,
        "kind": outcome.kind,
        "status": outcome.status,
        "tool": outcome.tool,
        "params": _shown(outcome.params),
        "output": _shown(outcome.output),
        "reason": outcome.reason,
        "error": outcome.error,
        "note": outcome.note,
        "message": outcome.message,
        "calls": outcome.calls,
    }
    return {key: value for key, value in data.items() if value is not None}


async def dry_run(
    rules: RuleSet, event: EventLike, *, invoke: Invoke = record_only, origin: Origin | None = None
) -> DryRunReport:
    """Match ``event`` (of ``origin``'s connection; ``None``: the environment's organization)
    against every rule and run the matching ones with ``invoke``."""
    report = DryRunReport(event.id, event.trigger, source=event.source)
    log = QuietLog()
    for match in rules.evaluate(event, log=log, origin=origin):
        entry = RuleReport(match.rule.name, match.matched, match.reason)
        report.rules.append(entry)
        if not match.matched:
            continue
        context = replace(rules.context(event, origin), org_id_fallback=Unknown(ORG_ID_UNKNOWN))
        try:
            entry.result = await run_rule(match.rule, context, invoke, log=log)
        except RuleFailed as failed:
            entry.result = failed.result
            entry.error = str(failed)
    return report


def _json(value: Any) -> str:
    return json.dumps(_shown(value), ensure_ascii=False, default=str)


def _preview(value: Any) -> str:
    text = _json(value)
    if len(text) > OUTPUT_PREVIEW:
        return text[: OUTPUT_PREVIEW - 1] + "…"
    return text


def _format_outcome(outcome: StepOutcome) -> list[str]:
    name = outcome.step if outcome.index is None else f"{outcome.step}[{outcome.index}]"
    if outcome.status == "skipped":
        return [f"  - {name}: skipped ({outcome.reason})"]
    headline = {
        "called": f"call {outcome.tool}",
        "failed": f"call {outcome.tool}" if outcome.kind == "tool" else f"{outcome.kind}",
        "logged": "log",
        "set": "let",
    }[outcome.status]
    lines = [f"  - {name}: {headline}"]
    if outcome.note:
        lines.append(f"      ({outcome.note})")
    if outcome.message is not None:
        lines.append(f"      message: {outcome.message}")
    params = outcome.params or {}
    for key, value in params.items():
        lines.append(f"      {key}: {_json(value)}")
    if outcome.status == "failed":
        lines.append(f"      ✗ {outcome.error}")
    elif outcome.kind == "tool":
        if isinstance(outcome.output, Unknown):
            lines.append("      → (output known when run)")
        else:
            pages = f" ({outcome.calls} pages)" if outcome.calls > 1 else ""
            lines.append(f"      → {_preview(outcome.output)}{pages}")
    return lines


def format_report(report: DryRunReport, *, show_unmatched: bool = True) -> str:
    """The report as text: one block per rule, the calls with their parameters."""
    lines = [f"event {report.trigger} {report.event_id[:12]}"]
    if report.source != "webhook":
        lines[0] += f" (source {report.source})"
    if not report.rules:
        lines.append("no rules")
    for rule in report.rules:
        if not rule.matched:
            if show_unmatched:
                lines.append(f"rule {rule.name}: no match ({rule.reason})")
            continue
        lines.append(f"rule {rule.name}: matches")
        for outcome in rule.result.outcomes if rule.result else []:
            lines.extend(_format_outcome(outcome))
        if rule.error:
            lines.append(f"  ✗ {rule.error}")
    return "\n".join(lines)
