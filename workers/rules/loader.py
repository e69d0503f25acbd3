"""Load a rules file: YAML to ``Rule``s, every problem collected, the file taken or refused whole.

``parse_rules(text)`` and ``load_rules(path)`` return a ``RuleSet`` or raise ``RulesError``
listing every problem (file, line, rule, step); they raise nothing else, whatever the
input. The shape of the file (``docs/rules.md`` has the full reference)::

    version: 1                      # optional
    env:                            # constants, as env.<name> in expressions
      org_domain: acme.example
    connections:                    # optional: env per connection (name or PCID)
      globex:
        env: {org_domain: globex.example}
    rules:
      - name: time-off-creates-ooo
        on: BOOKING_CREATED         # one trigger or a list
        when: payload.type == "time-off"
        connections: [acme, globex] # optional: only these connections' events
        tenants: [agency]           # optional: or those of these tenants' connections
        steps:
          - id: organizer           # optional; output as steps.organizer
            tool: cal_organizations_users_controller_get_organizations_users
            with:
              emails: ["${{ payload.organizer.email }}"]

Parsing here checks the shape (known keys, types, names, expression syntax); the checks
against Cal.com's tools and between steps are ``calhooks.workers.rules.validator``'s.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calhooks.service.connections.tenants import TenantNameError, check_tenant_name
from calhooks.service.core.settings import Settings
from calhooks.workers.reconcile.triggers import PREFIX as RECONCILE_PREFIX
from calhooks.workers.rules import validator
from calhooks.workers.rules.expressions import Expression, ExpressionSyntaxError, compile_expression
from calhooks.workers.rules.model import (
    LOG_LEVELS,
    Constant,
    Dynamic,
    Interpolated,
    ListOf,
    LogLevel,
    MapOf,
    Problem,
    Rule,
    RulesError,
    Step,
    StepKind,
    Template,
)
from calhooks.workers.rules.ruleset import RuleSet
from calhooks.workers.rules.scope import ALL, ORG_ID, AllOrigins, Audience, ConnectionEnv, Origin
from calhooks.workers.rules.templates import TemplateSyntaxError, split_template, whole_expression
from calhooks.workers.rules.yamlsource import MAX_FILE_BYTES, Node, YamlProblem, decode, parse_yaml

FILE_KEYS = ("version", "env", "connections", "rules")
CONNECTION_KEYS = ("env",)
RULE_KEYS = ("name", "description", "on", "when", "connections", "tenants", "steps")
STEP_KEYS = (
    "id",
    "description",
    "tool",
    "log",
    "let",
    "with",
    "when",
    "for_each",
    "as",
    "level",
    "paginate",
    "cache",
)
STEP_KINDS: tuple[StepKind, ...] = ("tool", "log", "let")
#: Step keys that belong to some kinds of step only.
STEP_KEY_KINDS: dict[str, tuple[StepKind, ...]] = {
    "with": ("tool", "log"),
    "level": ("log",),
    "paginate": ("tool",),
    "cache": ("tool",),
}
#: Rule names appear in logs, dead letters and the workers' ledger keys.
RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
#: Step ids, loop variables and env names are CEL identifiers (``steps.<id>``).
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: Words CEL reserves; they cannot be identifiers.
CEL_RESERVED = frozenset(
    {
        "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
        "loop", "package", "namespace", "return", "var", "void", "while", "in", "true",
        "false", "null",
    }
)  # fmt: skip
DEFAULT_LOOP_VARIABLE = "item"
#: ``cache:`` durations: a number and a unit (``90s``, ``10m``, ``1h``), at most a day.
DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_CACHE_SECONDS = 86400


def _kind(node: Node) -> str:
    if node.is_map:
        return "a mapping"
    if node.is_list:
        return "a list"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        #: Ids of steps that did not parse, by rule: references to them are not reported.
        self.unparsed_ids: dict[str, set[str]] = {}

    def problem(
        self, line: int, message: str, rule: str | None = None, step: str | None = None
    ) -> None:
        self.problems.append(Problem(self.source, line, message, rule, step))

    def unknown_keys(
        self, node: Node, known: tuple[str, ...], rule: str | None = None, step: str | None = None
    ) -> None:
        for key in node.value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                allowed = ", ".join(known)
                self.problem(
                    node.key_lines[key], f"unknown key {key!r}{hint}; known: {allowed}", rule, step
                )

    # --- the file ------------------------------------------------------------------------

    def parse_file(
        self, root: Node | None
    ) -> tuple[dict[str, Any], list[Rule], list[ConnectionEnv]]:
        if root is None:
            self.problem(0, "the file is empty: it needs a 'rules:' list")
            return {}, [], []
        if not root.is_map:
            self.problem(root.line, f"the file must be a mapping with 'rules:', not {_kind(root)}")
            return {}, [], []
        self.unknown_keys(root, FILE_KEYS)
        version = root.value.get("version")
        if version is not None and version.value != 1:
            self.problem(version.line, f"unsupported version {version.value!r}; this is version 1")
        env = self.parse_env(root.value.get("env"))
        connections = self.parse_connections(root.value.get("connections"))
        rules_node = root.value.get("rules")
        if rules_node is None:
            self.problem(root.line, "missing 'rules:' (a list of rules; [] for none)")
            return env, [], connections
        if not rules_node.is_list:
            self.problem(rules_node.line, f"'rules' must be a list, not {_kind(rules_node)}")
            return env, [], connections
        rules = []
        names: dict[str, int] = {}
        for index, rule_node in enumerate(rules_node.value, start=1):
            rule = self.parse_rule(rule_node, index)
            if rule is None:
                continue
            if rule.name in names:
                self.problem(
                    rule.line,
                    f"another rule has this name (line {names[rule.name]}); names must be unique",
                    rule.name,
                )
                continue
            names[rule.name] = rule.line
            rules.append(rule)
        return env, rules, connections

    def parse_connections(self, node: Node | None) -> list[ConnectionEnv]:
        """The top-level ``connections:``: by connection name or PCID, an ``env``."""
        if node is None or node.value is None:
            return []
        if not node.is_map:
            self.problem(
                node.line,
                "'connections' must be a mapping of connection names (or PCIDs) to their"
                f" settings, not {_kind(node)}",
            )
            return []
        entries = []
        for ref, value in node.items():
            line = node.key_lines[ref]
            if not ref.strip():
                self.problem(line, "connections: a connection name cannot be empty")
                continue
            if value.value is None:
                entries.append(ConnectionEnv(ref, {}, line))
                continue
            if not value.is_map:
                self.problem(
                    line, f"connections.{ref} must be a mapping (env: ...), not {_kind(value)}"
                )
                continue
            self.unknown_keys(value, CONNECTION_KEYS)
            env = self.parse_env(value.value.get("env"), f"connections.{ref}.env")
            if ORG_ID in env:
                self.problem(
                    value.key_lines.get("env", line),
                    f"connections.{ref}.env.{ORG_ID}: a connection's org id is the one stored"
                    " with it (calhooks connections add --org-id)",
                )
                continue
            entries.append(ConnectionEnv(ref, env, line))
        return entries

    def parse_env(self, node: Node | None, key: str = "env") -> dict[str, Any]:
        if node is None or node.value is None:
            return {}
        if not node.is_map:
            self.problem(
                node.line, f"'{key}' must be a mapping of names to values, not {_kind(node)}"
            )
            return {}
        env = {}
        for name, value in node.items():
            line = node.key_lines[name]
            if not IDENTIFIER.match(name) or name in CEL_RESERVED:
                self.problem(line, f"env name {name!r} is not an identifier (letters, digits, _)")
                continue
            plain = value.plain()
            if "${{" in json.dumps(plain):
                self.problem(line, f"{key}.{name} holds ${{{{ }}}}: env values are constants")
                continue
            env[name] = plain
        return env

    # --- rules ---------------------------------------------------------------------------

    def parse_rule(self, node: Node, index: int) -> Rule | None:
        """The rule, as much of it as parses (problems are recorded: the file is refused, but
        what did parse is still validated); ``None`` when it is not even a mapping."""
        if not node.is_map:
            self.problem(node.line, f"rule #{index} must be a mapping, not {_kind(node)}")
            return None
        name_node = node.value.get("name")
        name = f"#{index}"
        if name_node is None:
            self.problem(node.line, "missing 'name'", name)
        elif not isinstance(name_node.value, str) or not RULE_NAME.match(name_node.value):
            self.problem(
                name_node.line,
                f"name {name_node.value!r} must be 1-100 letters, digits, '-', '_', '.' or ':'"
                " starting with a letter or digit",
                name,
            )
        else:
            name = name_node.value
        self.unknown_keys(node, RULE_KEYS, name)
        description = self.text(node.value.get("description"), "description", name)
        triggers = self.parse_triggers(node, name)
        when = self.condition(node.value.get("when"), "when", name)
        audience = self.parse_audience(node, name)
        steps = self.parse_steps(node.value.get("steps"), node.line, name)
        return Rule(name, node.line, triggers, tuple(steps), when, description or "", audience)

    def parse_audience(self, node: Node, rule: str) -> Audience:
        """``connections:`` (names or PCIDs) and ``tenants:``: one string or a list each."""
        found: dict[str, list[str]] = {"connections": [], "tenants": []}
        lines: dict[tuple[str, str], int] = {}
        for key, names in found.items():
            list_node = node.value.get(key)
            if list_node is None:
                continue
            items = list_node.value if list_node.is_list else [list_node]
            if not items:
                self.problem(list_node.line, f"'{key}' lists nothing (leave it out for all)", rule)
            for item in items:
                if not isinstance(item.value, str) or not item.value.strip():
                    self.problem(item.line, f"'{key}' holds names, not {_kind(item)}", rule)
                    continue
                if key == "tenants":
                    try:
                        check_tenant_name(item.value)
                    except TenantNameError as error:
                        self.problem(item.line, f"tenants: {error}", rule)
                        continue
                if item.value not in names:
                    names.append(item.value)
                    lines[(key, item.value)] = item.line
        return Audience(tuple(found["connections"]), tuple(found["tenants"]), lines)

    def text(self, node: Node | None, key: str, rule: str, step: str | None = None) -> str | None:
        if node is None:
            return None
        if not isinstance(node.value, str):
            self.problem(node.line, f"'{key}' must be a string, not {_kind(node)}", rule, step)
            return None
        return node.value

    def parse_triggers(self, node: Node, rule: str) -> tuple[str, ...]:
        on = node.value.get("on")
        if on is None:
            self.problem(node.line, "missing 'on' (the trigger or triggers it runs for)", rule)
            return ()
        items = on.value if on.is_list else [on]
        if not items:
            self.problem(on.line, "'on' lists no trigger", rule)
            return ()
        triggers: list[str] = []
        for item in items:
            if not isinstance(item.value, str):
                self.problem(item.line, f"a trigger must be a string, not {_kind(item)}", rule)
                continue
            message = validator.trigger_problem(item.value)
            if message is not None:
                self.problem(item.line, message, rule)
                continue
            if item.value not in triggers:
                triggers.append(item.value)
        return tuple(triggers)

    # --- expressions and templates -------------------------------------------------------

    def condition(
        self, node: Node | None, key: str, rule: str, step: str | None = None
    ) -> Expression | None:
        """``when`` / ``for_each``: always CEL; a ``${{ }}`` around it is allowed."""
        if node is None:
            return None
        if not isinstance(node.value, str):
            self.problem(
                node.line,
                f"'{key}' must be a CEL expression (a string), not {_kind(node)}",
                rule,
                step,
            )
            return None
        source = node.value
        try:
            inner = whole_expression(source)
            if inner is None and "${{" in source:
                raise TemplateSyntaxError(
                    f"'{key}' is one CEL expression; write it bare or as one ${{{{ ... }}}}"
                )
        except TemplateSyntaxError as error:
            self.problem(node.line, f"{key}: {error}", rule, step)
            return None
        return self.compile(inner if inner is not None else source, node.line, key, rule, step)

    def compile(
        self, source: str, line: int, key: str, rule: str, step: str | None
    ) -> Expression | None:
        try:
            return compile_expression(source.strip(), line)
        except ExpressionSyntaxError as error:
            self.problem(line, f"{key}: CEL syntax error: {error}", rule, step)
            return None

    def template(self, node: Node, key: str, rule: str, step: str) -> Template | None:
        if node.is_list:
            items = [self.template(item, key, rule, step) for item in node.value]
            if any(item is None for item in items):
                return None
            done = [item for item in items if item is not None]
            if all(isinstance(item, Constant) for item in done):
                return Constant(
                    [item.value for item in done if isinstance(item, Constant)], node.line
                )
            return ListOf(tuple(done), node.line)
        if node.is_map:
            entries = [
                (name, self.template(value, f"{key}.{name}", rule, step))
                for name, value in node.items()
            ]
            if any(value is None for _, value in entries):
                return None
            kept = [(name, value) for name, value in entries if value is not None]
            if all(isinstance(value, Constant) for _, value in kept):
                return Constant(
                    {name: value.value for name, value in kept if isinstance(value, Constant)},
                    node.line,
                )
            return MapOf(tuple(kept), node.line)
        if not isinstance(node.value, str) or "${{" not in node.value:
            return Constant(node.value, node.line)
        try:
            parts = split_template(node.value)
            whole = whole_expression(node.value)
        except TemplateSyntaxError as error:
            self.problem(node.line, f"{key}: {error}", rule, step)
            return None
        if whole is not None:
            expression = self.compile(whole, node.line, key, rule, step)
            return None if expression is None else Dynamic(expression, node.line)
        compiled: list[str | Expression] = []
        for part in parts:
            if isinstance(part, str):
                compiled.append(part)
                continue
            expression = self.compile(part[0], node.line, key, rule, step)
            if expression is None:
                return None
            compiled.append(expression)
        return Interpolated(tuple(compiled), node.line)

    # --- steps ---------------------------------------------------------------------------

    def parse_steps(self, node: Node | None, line: int, rule: str) -> list[Step]:
        """The steps that parse (the others' problems are recorded)."""
        if node is None:
            self.problem(line, "missing 'steps' (what the rule does)", rule)
            return []
        if not node.is_list or not node.value:
            self.problem(node.line, "'steps' must be a non-empty list", rule)
            return []
        steps = []
        ids: dict[str, int] = {}
        for position, step_node in enumerate(node.value, start=1):
            step = self.parse_step(step_node, position, rule)
            step_id = step.id if step is not None else self.step_id(step_node)
            if step_id is not None:
                if step_id in ids:
                    label = f"step {step_id!r}"
                    self.problem(
                        step_node.line,
                        f"id {step_id!r} is already step #{ids[step_id]}'s; ids must be unique",
                        rule,
                        label,
                    )
                    continue
                ids[step_id] = position
            if step is None:
                if step_id is not None:
                    self.unparsed_ids.setdefault(rule, set()).add(step_id)
                continue
            steps.append(step)
        return steps

    @staticmethod
    def step_id(node: Node) -> str | None:
        """The valid ``id`` of a step node, if it has one."""
        id_node = node.value.get("id") if node.is_map else None
        if id_node is None or not isinstance(id_node.value, str):
            return None
        value = id_node.value
        return value if IDENTIFIER.match(value) and value not in CEL_RESERVED else None

    def parse_step(self, node: Node, position: int, rule: str) -> Step | None:
        """One step, or ``None`` (its problems recorded): its id, its kind's own fields, and
        what every step may carry (``when``, ``for_each``)."""
        label = f"step #{position}"
        if not node.is_map:
            self.problem(node.line, f"a step must be a mapping, not {_kind(node)}", rule, label)
            return None
        fields = node.value
        step_id, ok = self.parse_step_id(fields.get("id"), rule, label)
        if step_id is not None:
            label = f"step {step_id!r}"
        self.unknown_keys(node, STEP_KEYS, rule, label)
        self.text(fields.get("description"), "description", rule, label)
        kind = self.step_kind(node, rule, label)
        if kind is None:
            return None
        when = self.condition(fields.get("when"), "when", rule, label)
        ok = ok and (fields.get("when") is None or when is not None)
        for_each, loop_variable = self.parse_loop(fields, rule, label)
        ok = ok and (fields.get("for_each") is None or for_each is not None)
        parse_body = {"tool": self.tool_step, "log": self.log_step, "let": self.let_step}[kind]
        body = parse_body(fields, rule, label)
        ok = body is not None and ok
        ok = self.misplaced_keys(fields, kind, rule, label) and ok
        if not ok or body is None:
            return None
        return Step(
            position=position,
            line=node.line,
            kind=kind,
            id=step_id,
            when=when,
            for_each=for_each,
            loop_variable=loop_variable,
            **body,
        )

    def parse_step_id(self, id_node: Node | None, rule: str, label: str) -> tuple[str | None, bool]:
        """The step's ``id`` (``None`` without one) and whether it is valid."""
        if id_node is None:
            return None, True
        if not isinstance(id_node.value, str) or not IDENTIFIER.match(id_node.value):
            self.problem(
                id_node.line,
                f"id {id_node.value!r} must be an identifier (letters, digits, _): it is"
                " used as steps.<id>",
                rule,
                label,
            )
            return None, False
        if id_node.value in CEL_RESERVED:
            self.problem(id_node.line, f"id {id_node.value!r} is a reserved word", rule, label)
            return None, False
        return id_node.value, True

    def step_kind(self, node: Node, rule: str, label: str) -> StepKind | None:
        """Which of ``tool``, ``log`` or ``let`` the step is; exactly one is allowed."""
        kinds = [kind for kind in STEP_KINDS if kind in node.value]
        if len(kinds) != 1:
            found = " and ".join(repr(k) for k in kinds) if kinds else "none"
            self.problem(
                node.line,
                f"a step has exactly one of 'tool', 'log' or 'let' (found {found})",
                rule,
                label,
            )
            return None
        return kinds[0]

    def tool_step(self, fields: dict[str, Node], rule: str, label: str) -> dict[str, Any] | None:
        """A ``tool`` step's own fields: the tool, ``with``, ``paginate`` and ``cache``."""
        tool = self.text(fields["tool"], "tool", rule, label)
        values, values_ok = self.values(fields.get("with"), "with", rule, label)
        paginate, paginate_ok = self.flag(fields.get("paginate"), "paginate", rule, label)
        cache, cache_ok = self.duration(fields.get("cache"), "cache", rule, label)
        if tool is None or not (values_ok and paginate_ok and cache_ok):
            return None
        return {"tool": tool, "values": values, "paginate": paginate, "cache": cache}

    def log_step(self, fields: dict[str, Node], rule: str, label: str) -> dict[str, Any] | None:
        """A ``log`` step's own fields: the message, ``with`` and ``level``."""
        ok = True
        message: Template | None = None
        log_node = fields["log"]
        if not isinstance(log_node.value, str) or not log_node.value.strip():
            self.problem(log_node.line, "'log' must be a non-empty message", rule, label)
            ok = False
        else:
            message = self.template(log_node, "log", rule, label)
            ok = message is not None
        values, values_ok = self.values(fields.get("with"), "with", rule, label)
        level: LogLevel = "info"
        level_node = fields.get("level")
        if level_node is not None:
            if level_node.value in LOG_LEVELS:
                level = level_node.value
            else:
                self.problem(
                    level_node.line,
                    f"level {level_node.value!r} is not one of {', '.join(LOG_LEVELS)}",
                    rule,
                    label,
                )
                ok = False
        if not (ok and values_ok):
            return None
        return {"message": message, "values": values, "level": level}

    def let_step(self, fields: dict[str, Node], rule: str, label: str) -> dict[str, Any] | None:
        """A ``let`` step's own field: the values it names."""
        values, ok = self.values(fields["let"], "let", rule, label, required=True)
        return {"values": values} if ok else None

    def misplaced_keys(self, fields: dict[str, Node], kind: str, rule: str, label: str) -> bool:
        """Whether no key of another kind of step is present (each found is a problem)."""
        ok = True
        for key, allowed in STEP_KEY_KINDS.items():
            if key in fields and kind not in allowed:
                self.problem(
                    fields[key].line, f"'{key}' does not apply to a {kind} step", rule, label
                )
                ok = False
        return ok

    def parse_loop(
        self, fields: dict[str, Node], rule: str, label: str
    ) -> tuple[Expression | None, str | None]:
        as_node = fields.get("as")
        if "for_each" not in fields:
            if as_node is not None:
                self.problem(
                    as_node.line, "'as' names the loop variable of 'for_each'", rule, label
                )
            return None, None
        for_each = self.condition(fields["for_each"], "for_each", rule, label)
        variable = DEFAULT_LOOP_VARIABLE
        if as_node is not None:
            value = as_node.value
            if not isinstance(value, str) or not IDENTIFIER.match(value) or value in CEL_RESERVED:
                self.problem(
                    as_node.line, f"'as' must be an identifier, not {value!r}", rule, label
                )
                return None, None
            if value in validator.RESERVED_NAMES:
                self.problem(
                    as_node.line, f"'as: {value}' would hide the {value!r} variable", rule, label
                )
                return None, None
            variable = value
        return for_each, variable

    def duration(
        self, node: Node | None, key: str, rule: str, label: str
    ) -> tuple[float | None, bool]:
        """``cache: 10m``: seconds, from 1 s to a day."""
        if node is None:
            return None, True
        match = DURATION.match(node.value) if isinstance(node.value, str) else None
        seconds = int(match[1]) * _UNIT_SECONDS[match[2]] if match else 0
        if not match or not 1 <= seconds <= MAX_CACHE_SECONDS:
            self.problem(
                node.line,
                f"'{key}' must be a duration such as 30s, 10m or 1h (at most 1d), not"
                f" {node.value!r}",
                rule,
                label,
            )
            return None, False
        return float(seconds), True

    def flag(self, node: Node | None, key: str, rule: str, label: str) -> tuple[bool, bool]:
        if node is None:
            return False, True
        if not isinstance(node.value, bool):
            self.problem(
                node.line, f"'{key}' must be true or false, not {_kind(node)}", rule, label
            )
            return False, False
        return node.value, True

    def values(
        self, node: Node | None, key: str, rule: str, label: str, *, required: bool = False
    ) -> tuple[dict[str, Template], bool]:
        if node is None or (node.value is None and not required):
            return {}, True
        if not node.is_map or (required and not node.value):
            self.problem(node.line, f"'{key}' must be a mapping of names to values", rule, label)
            return {}, False
        values: dict[str, Template] = {}
        ok = True
        for name, value in node.items():
            if key == "let" and (not IDENTIFIER.match(name) or name in CEL_RESERVED):
                self.problem(
                    node.key_lines[name], f"let name {name!r} is not an identifier", rule, label
                )
                ok = False
                continue
            template = self.template(value, f"{key}.{name}", rule, label)
            if template is None:
                ok = False
                continue
            values[name] = template
        return values, ok


def parse_rules(
    data: bytes | str, *, source: str = "<rules>", env: Mapping[str, Any] | None = None
) -> RuleSet:
    """The rules in ``data``; ``RulesError`` listing every problem when any is found.

    ``env`` (from the settings) is laid over the file's ``env:`` mapping.
    """
    parser = _Parser(source)
    try:
        root = parse_yaml(decode(data))
    except YamlProblem as problem:
        raise RulesError([Problem(source, problem.line, problem.message)]) from None
    file_env, rules, connections = parser.parse_file(root)
    merged_env = {**file_env, **(env or {})}
    _validate(parser, rules, merged_env, connections)
    if parser.problems:
        raise RulesError(parser.problems)
    return RuleSet(tuple(rules), merged_env, source, connections=tuple(connections))


def _validate(
    parser: _Parser, rules: list[Rule], env: dict[str, Any], connections: list[ConnectionEnv]
) -> None:
    """Check the rules with the ``env`` of every organization they may run for.

    The environment organization's (and of connections without an entry) first; then, for
    each entry of ``connections:``, the rules that may run for it with its ``env``: what
    only that ``env`` gets wrong is reported once, naming the connection.
    """
    with_entry = {entry.ref for entry in connections}
    everywhere = [
        rule
        for rule in rules
        if rule.audience.tenants
        or rule.audience.everyone
        or any(ref not in with_entry for ref in rule.audience.connections)
    ]
    validator.validate(everywhere, env, parser.problem, parser.unparsed_ids)
    seen = {(p.line, p.message, p.rule, p.step) for p in parser.problems}
    for entry in connections:
        for_it = [
            rule
            for rule in rules
            if rule.audience.tenants
            or rule.audience.everyone
            or entry.ref in rule.audience.connections
        ]
        variant = {name: value for name, value in env.items() if name != ORG_ID} | dict(entry.env)

        def report(
            line: int,
            message: str,
            rule: str | None = None,
            step: str | None = None,
            ref: str = entry.ref,
        ) -> None:
            if (line, message, rule, step) not in seen:
                seen.add((line, message, rule, step))
                parser.problem(line, f"{message} (with the env of connection {ref!r})", rule, step)

        validator.validate(for_it, variant, report, parser.unparsed_ids)


def load_rules(path: str | Path, *, env: Mapping[str, Any] | None = None) -> RuleSet:
    """The rules in the file at ``path``; ``RulesError`` when unreadable or invalid."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            # One byte past the limit, so an oversized file is reported, not silently cut.
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RulesError([Problem(source, 0, f"cannot read the rules file: {reason}")]) from None
    return parse_rules(data, source=source, env=env)


def rules_env(settings: Settings) -> dict[str, Any]:
    """The ``env`` the settings lay over a rules file's own ``env:``.

    ``CALHOOKS_RULES_ENV`` (a JSON object) overrides the file's names; ``CALHOOKS_ORG_ID``,
    when set, is ``env.org_id``.
    """
    env = dict(settings.rules_env)
    if settings.org_id is not None:
        env["org_id"] = settings.org_id
    return env


def load_rules_from_settings(settings: Settings) -> RuleSet | None:
    """The rules in ``CALHOOKS_RULES_FILE`` (``None`` when unset); ``RulesError`` if bad."""
    if settings.rules_file is None:
        return None
    return load_rules(settings.rules_file, env=rules_env(settings))


def rule_triggers(settings: Settings, origin: Origin | AllOrigins | None = ALL) -> tuple[str, ...]:
    """The triggers the rules in ``CALHOOKS_RULES_FILE`` react to, sorted (none without one).

    What webhook subscriptions need of the rules: it loads and checks the file (``RulesError``
    if bad) and imports nothing of the worker runtime. Reconciliation's ``calhooks.*`` triggers
    are left out: Cal.com has no webhook for them. With ``origin`` (a connection, or ``None``
    for the environment's organization), only the rules that run for it count: a rule for
    ``connections: [globex]`` does not subscribe Acme's webhook to its triggers.
    """
    rules = load_rules_from_settings(settings)
    if rules is None:
        return ()
    chosen = [
        rule for rule in rules if isinstance(origin, AllOrigins) or rule.audience.includes(origin)
    ]
    triggers = {trigger for rule in chosen for trigger in rule.triggers}
    return tuple(sorted(t for t in triggers if not t.startswith(RECONCILE_PREFIX)))
