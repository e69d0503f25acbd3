"""Checks of parsed rules against Cal.com's tools registry and against themselves.

Run by the loader after parsing; every problem is reported through ``report`` (line,
message, rule, step) so a file's problems come out together:

* triggers Cal.com does not have (``calcom.webhooks.WEBHOOK_TRIGGERS``) and that are not
  reconciliation's (``workers.reconcile.triggers``: ``calhooks.USER_CREATED``...); ``PING``
  is refused too: it is the dashboard's test delivery, answered by the intake itself and
  never queued, so a rule on it would never run;
* unknown tools, unknown parameters, missing required parameters (``orgId`` excepted: it
  defaults to ``env.org_id``, i.e. ``CALHOOKS_ORG_ID``); ``paginate`` on a tool that is not
  a take/skip list; ``cache`` on a tool that is not a read (GET);
* literal parameter values checked against the parameter's JSON Schema (type, enum,
  pattern, bounds); text with ``${{ }}`` inside needs a parameter that takes a string;
  expressions that use nothing but ``env`` and constants are evaluated now and checked the
  same way;
* in expressions: names other than ``payload``, ``event``, ``env``, ``steps`` and the step's
  loop variable; functions CEL here does not have; ``steps.<id>`` that is not an earlier
  step of the rule; ``env.<name>`` that is not defined; ``event.<field>`` that does not exist.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from jsonschema import Draft202012Validator, FormatChecker

from calhooks.service.calcom.tools import TOOLS, Parameter, Tool
from calhooks.service.calcom.validation import segment_problem
from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS
from calhooks.workers.reconcile.triggers import RECONCILE_TRIGGERS
from calhooks.workers.rules.evaluation import (
    EvaluationError,
    NotJSON,
    evaluate,
    new_context,
    to_json,
)
from calhooks.workers.rules.expressions import (
    EVENT_FIELDS,
    NAMESPACES,
    ROOT_NAMES,
    Expression,
    unknown_function_problems,
)
from calhooks.workers.rules.model import (
    Constant,
    Dynamic,
    Interpolated,
    ListOf,
    MapOf,
    Rule,
    Step,
    Template,
)
from calhooks.workers.rules.scope import ORG_ID  # always a valid env name: CALHOOKS_ORG_ID

# or the connection's org id provide it (either may be unknown when a file is only checked)

#: Names a loop variable may not take (it would hide them).
RESERVED_NAMES = frozenset(ROOT_NAMES) | NAMESPACES | {"get"}
PING = "PING"

_FORMATS = FormatChecker(formats=["email"])


class Report(Protocol):
    def __call__(
        self, line: int, message: str, rule: str | None = None, step: str | None = None
    ) -> None: ...


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def trigger_problem(trigger: str) -> str | None:
    """Why ``trigger`` cannot be a rule's trigger, or ``None`` when it can."""
    if trigger in WEBHOOK_TRIGGERS or trigger in RECONCILE_TRIGGERS:
        return None
    if trigger == PING:
        return (
            "PING is Cal.com's test delivery: the intake answers it and never queues it, so"
            " no rule can run on it"
        )
    known = (*WEBHOOK_TRIGGERS, *RECONCILE_TRIGGERS)
    return f"unknown trigger {trigger!r}{_suggest(trigger, known)}"


#: Validators by schema identity (the registry's schemas live as long as the process).
_VALIDATORS: dict[int, tuple[Mapping[str, Any], Draft202012Validator]] = {}


def _schema_validator(parameter: Parameter) -> Draft202012Validator:
    cached = _VALIDATORS.get(id(parameter.schema))
    if cached is None or cached[0] is not parameter.schema:
        cached = (
            parameter.schema,
            Draft202012Validator(dict(parameter.schema), format_checker=_FORMATS),
        )
        _VALIDATORS[id(parameter.schema)] = cached
    return cached[1]


def _schema_problem(parameter: Parameter, value: Any) -> str | None:
    errors = sorted(_schema_validator(parameter).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        if parameter.location == "path" and isinstance(value, str):
            reason = segment_problem(value)
            return f"{parameter.name}: {reason}" if reason else None
        return None
    error = errors[0]
    where = parameter.name + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path
    )
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"{where}: {error.instance!r} is not one of {allowed}"
    if error.validator == "type":
        shown = json.dumps(error.instance, ensure_ascii=False, default=str)
        return f"{where}: expected {error.validator_value}, got {shown}"
    if error.validator == "pattern" and parameter.name in ("start", "end"):
        return f"{where}: {error.instance!r} is not a UTC date-time like 2025-05-01T00:00:00.000Z"
    return f"{where}: {error.message}"


def _accepts(schema: Mapping[str, Any], json_type: str) -> bool:
    declared = schema.get("type")
    if declared is None:
        return True
    types = [declared] if isinstance(declared, str) else list(declared)
    return json_type in types or (json_type == "integer" and "number" in types)


class _RuleChecker:
    def __init__(
        self,
        rule: Rule,
        env: Mapping[str, Any],
        report: Report,
        unparsed_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.rule = rule
        self.unparsed_ids = unparsed_ids
        self.env = env
        self.env_names = set(env) | {ORG_ID}
        self.report = report

    def problem(self, line: int, message: str, step: Step | None = None) -> None:
        self.report(line, message, self.rule.name, step.label if step else None)

    def check(self) -> None:
        if self.rule.when is not None:
            self.expression(self.rule.when, set(ROOT_NAMES) - {"steps"}, {}, None, "when")
        earlier: dict[str, Step] = {}
        for step in self.rule.steps:
            self.check_step(step, earlier)
            if step.id is not None:
                earlier[step.id] = step

    def check_step(self, step: Step, earlier: dict[str, Step]) -> None:
        names = set(ROOT_NAMES)
        if step.for_each is not None:
            self.expression(step.for_each, names, earlier, step, "for_each")
            assert step.loop_variable is not None
            names = names | {step.loop_variable}
        if step.when is not None:
            self.expression(step.when, names, earlier, step, "when")
        if step.message is not None:
            self.template(step.message, names, earlier, step, "log")
        for name, template in step.values.items():
            self.template(template, names, earlier, step, name)
        if step.kind == "tool":
            self.check_tool(step)

    # --- expressions ---------------------------------------------------------------------

    def expression(
        self,
        expression: Expression,
        names: set[str],
        earlier: Mapping[str, Step],
        step: Step | None,
        where: str,
    ) -> None:
        line = expression.line
        for name in sorted(expression.names - names):
            if name == "steps":
                self.problem(line, f"{where}: steps are not available in a rule's condition", step)
            else:
                self.problem(line, f"{where}: unknown name {name!r}{_suggest(name, names)}", step)
        for message in unknown_function_problems(expression):
            self.problem(line, f"{where}: {message}", step)
        if "steps" in names:
            for ref in sorted(expression.steps):
                self.step_reference(ref, earlier, step, line, where)
        for ref in sorted(expression.env - self.env_names):
            self.problem(
                line,
                f"{where}: env.{ref} is not defined{_suggest(ref, self.env_names)} (define it"
                " under env: or in CALHOOKS_RULES_ENV)",
                step,
            )
        for ref in sorted(expression.event - set(EVENT_FIELDS)):
            fields = ", ".join(EVENT_FIELDS)
            self.problem(
                line,
                f"{where}: event has no field {ref!r}{_suggest(ref, EVENT_FIELDS)} (it has"
                f" {fields}; the delivery's data is payload)",
                step,
            )

    def step_reference(
        self, ref: str, earlier: Mapping[str, Step], step: Step | None, line: int, where: str
    ) -> None:
        if ref in earlier or ref in self.unparsed_ids:
            return  # fine, or a step whose own problems are reported already
        if step is not None and ref == step.id:
            self.problem(line, f"{where}: steps.{ref} is this step's own output", step)
            return
        later = [s for s in self.rule.steps if s.id == ref]
        if later:
            self.problem(line, f"{where}: steps.{ref} runs later (step #{later[0].position})", step)
            return
        ids = [s.id for s in self.rule.steps if s.id is not None]
        self.problem(line, f"{where}: no step has id {ref!r}{_suggest(ref, ids)}", step)

    def template(
        self,
        template: Template,
        names: set[str],
        earlier: Mapping[str, Step],
        step: Step,
        where: str,
    ) -> None:
        if isinstance(template, Dynamic):
            self.expression(template.expression, names, earlier, step, where)
        elif isinstance(template, Interpolated):
            for part in template.parts:
                if isinstance(part, Expression):
                    self.expression(part, names, earlier, step, where)
        elif isinstance(template, ListOf):
            for item in template.items:
                self.template(item, names, earlier, step, where)
        elif isinstance(template, MapOf):
            for _, item in template.items:
                self.template(item, names, earlier, step, where)

    def constant(self, expression: Expression, step: Step, where: str) -> tuple[bool, Any]:
        """Evaluate an expression that depends on nothing but ``env``: (known, value)."""
        if not expression.names <= {"env"} or not expression.env <= set(self.env):
            return False, None
        try:
            return True, to_json(evaluate(expression, new_context({"env": dict(self.env)})))
        except (EvaluationError, NotJSON) as error:
            self.problem(expression.line, f"{where}: {error}", step)
            return False, None

    # --- tools ---------------------------------------------------------------------------

    def check_tool(self, step: Step) -> None:
        assert step.tool is not None
        tool = TOOLS.get(step.tool)
        if tool is None:
            self.problem(step.line, f"unknown tool {step.tool!r}{_suggest(step.tool, TOOLS)}", step)
            return
        for name, template in step.values.items():
            parameter = tool.by_name.get(name)
            if parameter is None:
                self.problem(
                    template.line,
                    f"{tool.name} has no parameter {name!r}{_suggest(name, tool.by_name)}",
                    step,
                )
                continue
            self.check_value(parameter, template, step)
        missing = [name for name in tool.required if name not in step.values and name != "orgId"]
        for name in missing:
            self.problem(step.line, f"missing required parameter {name!r} of {tool.name}", step)
        if step.paginate and not tool.paginated:
            self.problem(
                step.line, f"paginate: {tool.name} is not a list tool with take and skip", step
            )
        if step.paginate and step.for_each is not None:
            self.problem(step.line, "paginate and for_each cannot be combined", step)
        if step.cache is not None and not tool.read_only:
            self.problem(
                step.line,
                f"cache: {tool.name} is a {tool.method}, and only reads (GET) can be cached",
                step,
            )

    def check_value(self, parameter: Parameter, template: Template, step: Step) -> None:
        schema = parameter.schema
        if isinstance(template, Constant):
            message = _schema_problem(parameter, template.value)
            if message is not None:
                self.problem(template.line, message, step)
        elif isinstance(template, Dynamic):
            known, value = self.constant(template.expression, step, parameter.name)
            if known:
                message = _schema_problem(parameter, value)
                if message is not None:
                    self.problem(
                        template.line, f"{message} (from {template.expression.source})", step
                    )
        elif isinstance(template, Interpolated):
            if not _accepts(schema, "string"):
                self.problem(
                    template.line,
                    f"{parameter.name}: text with ${{{{ }}}} makes a string, but"
                    f" {parameter.name} is {parameter.type}; make ${{{{ ... }}}} the whole value",
                    step,
                )
        elif isinstance(template, ListOf):
            if not _accepts(schema, "array"):
                self.problem(
                    template.line, f"{parameter.name}: a list, but it is {parameter.type}", step
                )
                return
            items = schema.get("items")
            if isinstance(items, Mapping):
                item_parameter = Parameter(parameter.name, parameter.location, items, False)
                for index, item in enumerate(template.items):
                    if isinstance(item, Constant):
                        message = _schema_problem(item_parameter, item.value)
                        if message is not None:
                            self.problem(
                                item.line,
                                message.replace(parameter.name, f"{parameter.name}[{index}]", 1),
                                step,
                            )
                    elif isinstance(item, Interpolated) and not _accepts(items, "string"):
                        self.problem(
                            item.line,
                            f"{parameter.name}[{index}]: text makes a string, but the items"
                            f" are {items.get('type')}",
                            step,
                        )
        elif isinstance(template, MapOf) and not _accepts(schema, "object"):
            self.problem(
                template.line, f"{parameter.name}: a mapping, but it is {parameter.type}", step
            )


def validate(
    rules: Iterable[Rule],
    env: Mapping[str, Any],
    report: Report,
    unparsed_ids: Mapping[str, set[str]] | None = None,
) -> None:
    """Report every problem of ``rules`` (with the merged ``env``) through ``report``.

    ``unparsed_ids``: by rule, ids of steps that failed to parse (and were reported), so
    references to them are not reported again as unknown.
    """
    for rule in rules:
        ids = frozenset((unparsed_ids or {}).get(rule.name, ()))
        _RuleChecker(rule, env, report, ids).check()


def tool_of(step: Step) -> Tool:
    """The registry entry of a validated tool step."""
    assert step.tool is not None
    return TOOLS[step.tool]
