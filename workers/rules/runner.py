"""Running one rule for one event: conditions, loops and values evaluated, tools called via a seam.

``run_rule(rule, context, invoke, log=...)`` goes through the rule's steps in order. For
each it evaluates ``for_each`` (the items; a step without one runs once), then per item
the step's ``when``, then its values, and

* for a ``tool`` step hands a ``StepCall`` - rule, step key, loop index, tool name and the
  fully evaluated parameters - to ``invoke``, an async callable that performs the call and
  returns Cal.com's ``data``. The workers pass one that runs each call exactly once
  (``calhooks.workers.jobs``); the dry run passes one that only records it. With ``paginate`` a
  list tool is invoked page after page (``take``/``skip``), one ``StepCall`` per page;
* for a ``log`` step writes the message and fields to ``log``;
* for a ``let`` step keeps the values.

The output (a list of outputs for a ``for_each`` step: one per item, ``null`` where the
item's ``when`` was false) becomes ``steps.<id>`` for later steps. Skipped steps leave no
``steps.<id>``.

**Conditions never fail a rule**: a ``when`` (or ``for_each``) that cannot be evaluated -
typically a field missing from this delivery - skips the step with the reason logged,
exactly as a false one does. **Values do**: a parameter that cannot be evaluated, or that
the tool's schema refuses, stops the rule; so does any error ``invoke`` raises. Either
way ``RuleFailed`` is raised with the outcomes so far and the original error as its
``__cause__`` (the workers look down that chain for what to retry).

**Limits** (``Limits``): an expression whose estimated cost is over the budget
(``expressions.check_cost``) and a ``for_each`` giving more items than its limit fail the
rule - even in a ``when`` - with a ``BudgetExceeded`` error naming the setting to raise.

For dry runs, an output can be ``Unknown`` (the dry run's ``invoke`` returns one): every
expression that reads it is then ``Unknown`` too instead of being evaluated, a ``when``
that depends on it lets the step through with a note, and a ``for_each`` over it stands
for one symbolic item.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, Protocol

import cel
import structlog

from calhooks.service.calcom.errors import ToolValidationError
from calhooks.service.calcom.tools import Tool
from calhooks.service.calcom.validation import validate_params
from calhooks.workers.rules.evaluation import (
    BudgetExceeded,
    EvaluationError,
    NotJSON,
    bind,
    check_cost,
    evaluate,
    format_datetime,
    largest_collection,
    new_context,
    to_json,
    to_text,
)
from calhooks.workers.rules.expressions import Expression, compact
from calhooks.workers.rules.model import (
    Constant,
    Dynamic,
    Interpolated,
    ListOf,
    MapOf,
    Rule,
    Step,
    StepKind,
    Template,
)
from calhooks.workers.rules.validator import tool_of

#: Most pages one ``paginate`` step fetches (x 250 items for most list tools).
MAX_PAGES = 200
#: Default budget of one expression's estimated cost (``CALHOOKS_RULES_COST_LIMIT``).
DEFAULT_COST_LIMIT = 100_000
#: Default most items of one ``for_each`` (``CALHOOKS_RULES_FOR_EACH_LIMIT``).
DEFAULT_FOR_EACH_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Limits:
    """What one rule run may spend: an expression's estimated cost, a for_each's items."""

    cost: int = DEFAULT_COST_LIMIT
    for_each: int = DEFAULT_FOR_EACH_LIMIT


class ForEachLimitExceeded(BudgetExceeded):
    def __init__(self, source: str, items: int, limit: int) -> None:
        Exception.__init__(
            self,
            f"for_each {compact(source)} gave {items:,} items, more than the limit of "
            f"{limit:,} (CALHOOKS_RULES_FOR_EACH_LIMIT)",
        )
        self.source, self.cost, self.limit = source, items, limit


logger = structlog.get_logger("calhooks.workers.rules")


class EventLike(Protocol):
    """What the rules read of ``calhooks.service.events.Event``."""

    @property
    def id(self) -> str: ...
    @property
    def trigger(self) -> str: ...
    @property
    def created_at(self) -> str | None: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def received_at(self) -> float: ...
    @property
    def source(self) -> str: ...


class Log(Protocol):
    """The structlog logger the runner writes to (``structlog.get_logger().bind(...)``)."""

    def bind(self, **values: Any) -> Log: ...
    def debug(self, event: str, **values: Any) -> Any: ...
    def info(self, event: str, **values: Any) -> Any: ...
    def warning(self, event: str, **values: Any) -> Any: ...
    def error(self, event: str, **values: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class StepCall:
    """One tool call a rule asks for, parameters fully evaluated: what ``invoke`` receives.

    ``(rule, step, index)`` names the call uniquely within an event and stays the same on
    every run of it: ``step`` is the step's ``id`` (``#<position>`` without one; page n > 1
    of a ``paginate`` step adds ``@page<n>``), ``index`` the ``for_each`` item (from 0) or
    ``None``.
    """

    rule: str
    step: str
    index: int | None
    tool: str
    params: Mapping[str, Any]
    #: Page number of a ``paginate`` step (from 1), else ``None``.
    page: int | None = None
    #: Seconds the answer may come from (and be kept in) the workers' read cache (``cache:``).
    cache: float | None = None


Invoke = Callable[[StepCall], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Unknown:
    """A value a dry run cannot know (an earlier call's output, and what depends on it)."""

    what: str

    def __str__(self) -> str:
        return f"<unknown until run: {self.what}>"


def contains_unknown(value: Any) -> bool:
    if isinstance(value, Unknown):
        return True
    if isinstance(value, Mapping):
        return any(contains_unknown(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(contains_unknown(item) for item in value)
    return False


@dataclass(frozen=True)
class EventContext:
    """What expressions see of an event, plus the rules' ``env``."""

    payload: Mapping[str, Any]
    event: Mapping[str, Any]
    env: Mapping[str, Any]
    #: ``orgId`` for calls that neither pass one nor have ``env.org_id`` (the dry run's
    #: ``Unknown``; ``None``: leave it out, and the parameter check says it is missing).
    org_id_fallback: Any = None

    @classmethod
    def of(cls, event: EventLike, env: Mapping[str, Any]) -> EventContext:
        received = datetime.fromtimestamp(event.received_at, UTC) if event.received_at else None
        return cls(
            payload=event.payload,
            event={
                "id": event.id,
                "trigger": event.trigger,
                "createdAt": event.created_at,
                "receivedAt": format_datetime(received) if received else None,
                "source": event.source,
            },
            env=dict(env),
        )

    def sizes(self) -> dict[str, int]:
        """The largest list or map in each name's value (see ``expressions.estimated_cost``)."""
        return {
            "payload": largest_collection(self.payload),
            "event": largest_collection(self.event),
            "env": largest_collection(self.env),
            "steps": 0,
        }

    def cel_context(self, steps: Mapping[str, Any] | None = None) -> cel.Context:
        return new_context(
            {
                "payload": self.payload,
                "event": self.event,
                "env": self.env,
                "steps": dict(steps or {}),
            }
        )


Status = Literal["called", "logged", "set", "skipped", "failed"]


@dataclass
class StepOutcome:
    """What happened to one step (one item of a ``for_each`` step)."""

    step: str
    index: int | None
    kind: StepKind
    status: Status
    tool: str | None = None
    #: The evaluated parameters (tool), fields (log) or values (let).
    params: dict[str, Any] | None = None
    output: Any = None
    #: Why the step was skipped.
    reason: str | None = None
    #: What went wrong (status ``failed``).
    error: str | None = None
    #: Anything else worth showing: a condition left to run time in a dry run.
    note: str | None = None
    #: The message written (log steps).
    message: str | None = None
    #: Tool calls made (pages of a ``paginate`` step).
    calls: int = 0


@dataclass
class RuleResult:
    """Every step outcome of one run of a rule, in order."""

    rule: str
    outcomes: list[StepOutcome] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def calls(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.status == "called"]


class RuleFailed(Exception):
    """A rule stopped at a step; ``result`` has what ran, ``__cause__`` the original error."""

    def __init__(self, result: RuleResult, step: str, index: int | None, message: str) -> None:
        self.result = result
        self.step = step
        self.index = index
        where = step if index is None else f"{step}[{index}]"
        super().__init__(f"rule {result.rule!r} failed at step {where}: {message}")


class _StepError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class _Run:
    def __init__(
        self, rule: Rule, context: EventContext, invoke: Invoke, log: Log, limits: Limits
    ) -> None:
        self.rule = rule
        self.context = context
        self.invoke = invoke
        self.log = log
        self.limits = limits
        self.outputs: dict[str, Any] = {}
        self.cel: cel.Context | None = None
        self.loop: tuple[str, Any] | None = None
        self.result = RuleResult(rule.name)
        #: The largest list or map each name holds, for the expressions' cost estimates.
        self.sizes = context.sizes()

    async def run(self) -> RuleResult:
        try:
            self.cel = self.context.cel_context()
        except EvaluationError as error:
            self.result.error = str(error)
            self.log.warning("rule.failed", error=self.result.error)
            raise RuleFailed(self.result, "(event)", None, self.result.error) from error
        for step in self.rule.steps:
            try:
                await self.run_step(step)
            except BudgetExceeded as error:
                self.fail(step, None, error, None)
        self.log.info("rule.done", calls=len(self.result.calls))
        return self.result

    # --- evaluation ----------------------------------------------------------------------

    def unknown(self, expression: Expression) -> bool:
        unknown_steps = {name for name, value in self.outputs.items() if isinstance(value, Unknown)}
        if expression.steps & unknown_steps:
            return True
        if "steps" in expression.names and not expression.steps and unknown_steps:
            return True  # steps[...] indexed by a computed name
        if self.loop is not None and isinstance(self.loop[1], Unknown):
            return self.loop[0] in expression.names
        return False

    def value(self, expression: Expression) -> Any:
        if self.unknown(expression):
            return Unknown(compact(expression.source))
        assert self.cel is not None
        check_cost(expression, self.sizes, self.limits.cost)
        return evaluate(expression, self.cel)

    def render(self, template: Template) -> Any:
        if isinstance(template, Constant):
            return copy.deepcopy(template.value)
        if isinstance(template, Dynamic):
            value = self.value(template.expression)
            return value if isinstance(value, Unknown) else self.json(template.expression, value)
        if isinstance(template, Interpolated):
            pieces = []
            for part in template.parts:
                if isinstance(part, str):
                    pieces.append(part)
                    continue
                value = self.value(part)
                if isinstance(value, Unknown):
                    return Unknown(f"text with ${{{{ {compact(part.source)} }}}}")
                try:
                    pieces.append(to_text(value))
                except NotJSON as error:
                    raise EvaluationError(part.source, str(error)) from None
            return "".join(pieces)
        if isinstance(template, ListOf):
            return [self.render(item) for item in template.items]
        assert isinstance(template, MapOf)
        return {name: self.render(item) for name, item in template.items}

    @staticmethod
    def json(expression: Expression, value: Any) -> Any:
        try:
            return to_json(value)
        except NotJSON as error:
            raise EvaluationError(expression.source, str(error)) from None

    def set_loop(self, step: Step, item: Any) -> None:
        assert step.loop_variable is not None
        self.loop = (step.loop_variable, item)
        self.sizes[step.loop_variable] = largest_collection(item)
        assert self.cel is not None
        bind(self.cel, step.loop_variable, None if isinstance(item, Unknown) else item)

    def set_output(self, step: Step, output: Any) -> None:
        if step.id is None:
            return
        if contains_unknown(output):
            output = Unknown(f"output of steps.{step.id}")
        self.outputs[step.id] = output
        visible = {k: None if isinstance(v, Unknown) else v for k, v in self.outputs.items()}
        self.sizes["steps"] = max(self.sizes.get("steps", 0), largest_collection(visible))
        assert self.cel is not None
        try:
            bind(self.cel, "steps", visible)
        except EvaluationError as error:
            self.fail(step, None, error, None, message=f"its output: {error.reason}")

    # --- steps ---------------------------------------------------------------------------

    def record(self, step: Step, index: int | None, status: Status, **details: Any) -> StepOutcome:
        outcome = StepOutcome(step.key, index, step.kind, status, tool=step.tool, **details)
        self.result.outcomes.append(outcome)
        log = self.log.bind(step=step.key)
        if index is not None:
            log = log.bind(index=index)
        if status == "skipped":
            log.info("rule.step.skipped", reason=outcome.reason)
        elif status == "failed":
            log.warning("rule.step.failed", tool=step.tool, error=outcome.error)
        else:
            log.debug(f"rule.step.{status}", tool=step.tool, calls=outcome.calls or None)
        return outcome

    async def run_step(self, step: Step) -> None:
        self.loop = None
        if step.for_each is None:
            note = self.condition(step, None)
            if note is not False:
                self.set_output(step, await self.execute(step, None, note))
            return
        try:
            items = self.value(step.for_each)
        except EvaluationError as error:
            self.record(step, None, "skipped", reason=f"for_each: {error.reason}")
            return
        symbolic = isinstance(items, Unknown)
        if symbolic:
            items = [Unknown(f"each item of {compact(step.for_each.source)}")]
        elif items is None:
            items = []
        elif not isinstance(items, list):
            kind = "map" if isinstance(items, dict) else type(items).__name__
            self.record(step, None, "skipped", reason=f"for_each gave a {kind}, not a list")
            return
        if len(items) > self.limits.for_each:
            raise ForEachLimitExceeded(step.for_each.source, len(items), self.limits.for_each)
        if not items:
            self.record(step, None, "skipped", reason="for_each gave no items")
        outputs: list[Any] = []
        for index, item in enumerate(items):
            position = None if symbolic else index
            try:
                self.set_loop(step, item)
            except EvaluationError as error:
                self.fail(step, position, error, None)
            note = self.condition(step, position)
            if note is False:
                outputs.append(None)
                continue
            if symbolic:
                each = f"for each item of {compact(step.for_each.source)}"
                note = "; ".join(n for n in (each, note) if n)
            outputs.append(await self.execute(step, position, note))
        self.loop = None
        self.set_output(step, outputs)

    def condition(self, step: Step, index: int | None) -> str | Literal[False] | None:
        """``False`` when the step is skipped (recorded), else a note for the outcome."""
        if step.when is None:
            return None
        try:
            value = self.value(step.when)
        except EvaluationError as error:
            self.record(step, index, "skipped", reason=f"when: {error.reason}")
            return False
        if isinstance(value, Unknown):
            return f"runs only if {compact(step.when.source)} (decided when run)"
        if value is True:
            return None
        if value is False:
            reason = f"when is false: {compact(step.when.source)}"
            self.record(step, index, "skipped", reason=reason)
            return False
        self.record(
            step,
            index,
            "skipped",
            reason=f"when gave {compact(to_text(value))!r}, not true or false",
        )
        return False

    def render_values(self, step: Step) -> dict[str, Any]:
        return {name: self.render(template) for name, template in step.values.items()}

    async def execute(self, step: Step, index: int | None, note: str | None) -> Any:
        try:
            values = self.render_values(step)
            message = self.render(step.message) if step.message is not None else None
        except EvaluationError as error:
            self.fail(step, index, error, None)
        if step.kind == "let":
            self.record(step, index, "set", params=values, output=values, note=note)
            return values
        if step.kind == "log":
            text = str(message) if isinstance(message, Unknown) else to_text(message)
            shown = {k: str(v) if isinstance(v, Unknown) else v for k, v in values.items()}
            emit = getattr(self.log.bind(step=step.key, index=index), step.level)
            emit("rule.log", message=text, fields=shown)
            self.record(
                step, index, "logged", params=values, output=values, note=note, message=text
            )
            return values
        return await self.call_tool(step, index, values, note)

    def fail(
        self,
        step: Step,
        index: int | None,
        error: Exception,
        params: dict[str, Any] | None,
        calls: int = 0,
        *,
        message: str | None = None,
    ) -> NoReturn:
        message = message or str(error) or type(error).__name__
        self.record(step, index, "failed", params=params, error=message, calls=calls)
        self.result.error = message
        raise RuleFailed(self.result, step.key, index, message) from error

    async def call_tool(
        self, step: Step, index: int | None, params: dict[str, Any], note: str | None
    ) -> Any:
        tool = tool_of(step)
        org_id = self.context.env.get("org_id", self.context.org_id_fallback)
        if "orgId" in tool.by_name and params.get("orgId") is None and org_id is not None:
            params["orgId"] = org_id
        if not contains_unknown(params):
            try:
                validate_params(tool, params)
            except ToolValidationError as error:
                hint = ""
                if "orgId" in error.parameters and "orgId" not in params:
                    hint = " (set CALHOOKS_ORG_ID or env.org_id, or pass orgId)"
                self.fail(step, index, error, params, message=f"{error}{hint}")
        calls = 0
        try:
            if step.paginate:
                output, calls = await self.paginate(step, tool, index, params)
            else:
                calls = 1
                output = await self.invoke(
                    StepCall(self.rule.name, step.key, index, tool.name, params, cache=step.cache)
                )
        except Exception as error:
            self.fail(step, index, error, params, calls)
        self.record(step, index, "called", params=params, output=output, note=note, calls=calls)
        return output

    async def paginate(
        self, step: Step, tool: Tool, index: int | None, params: dict[str, Any]
    ) -> tuple[Any, int]:
        take = params.get("take") or int(tool.by_name["take"].schema.get("maximum", 250))
        skip = int(params.get("skip") or 0)
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            key = step.key if page == 1 else f"{step.key}@page{page}"
            call = StepCall(
                self.rule.name,
                key,
                index,
                tool.name,
                {**params, "take": take, "skip": skip},
                page,
                step.cache,
            )
            data = await self.invoke(call)
            if isinstance(data, Unknown):
                return data, page
            batch = data if isinstance(data, list) else []
            items.extend(batch)
            if len(batch) < take:
                return items, page
            skip += len(batch)
        raise _StepError(f"more than {MAX_PAGES} pages of {take}: narrow the query")


async def run_rule(
    rule: Rule,
    context: EventContext,
    invoke: Invoke,
    *,
    log: Log | None = None,
    limits: Limits | None = None,
) -> RuleResult:
    """Run ``rule``'s steps for one event; ``RuleFailed`` (chained) when a step fails."""
    bound: Log = (log or logger).bind(rule=rule.name)
    return await _Run(rule, context, invoke, bound, limits or Limits()).run()
