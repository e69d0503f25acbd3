"""Evaluating compiled rule expressions: contexts, the cost budget, values in and out.

A context binds the names an expression sees (``payload``, ``event``, ``env``, ``steps``, a
loop variable) with the extension functions and the ``get`` helper registered;
``check_cost`` refuses an expression whose estimated cost over the values it would read is
past the budget before it runs (``expressions`` explains why); ``evaluate`` runs it and
``unwrap``, ``to_json`` and ``to_text`` turn CEL's results into what a tool call or a log
line takes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import cel

from calhooks.workers.rules.expressions import (
    EXTENSION_FUNCTIONS,
    MAX_VALUE_DEPTH,
    Expression,
    compact,
    is_panic,
)


class BudgetExceeded(Exception):
    """An expression would cost more than the budget (deliberately not an EvaluationError:
    a condition that cannot be evaluated skips its step, one over budget fails the rule)."""

    def __init__(self, source: str, cost: int, limit: int) -> None:
        self.source = source
        self.cost = cost
        self.limit = limit
        super().__init__(
            f"{compact(source)}: would take about {cost:,} evaluation steps, over the budget "
            f"of {limit:,} (CALHOOKS_RULES_COST_LIMIT)"
        )


class EvaluationError(ValueError):
    """Evaluating an expression failed (missing field, wrong type, ...); friendly message."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{compact(source)}: {reason}")


def largest_collection(value: Any, limit: int = MAX_VALUE_DEPTH) -> int:
    """The length of the largest list or map anywhere in ``value`` (``limit`` levels deep)."""
    largest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        current, depth = pending.pop()
        if isinstance(current, Mapping | list | tuple) and depth <= limit:
            largest = max(largest, len(current))
            items = current.values() if isinstance(current, Mapping) else current
            pending.extend((item, depth + 1) for item in items)
    return largest


def estimated_cost(expression: Expression, sizes: Mapping[str, int]) -> int:
    """About how many steps evaluating ``expression`` takes: ``n ** depth`` (module docstring);
    ``sizes`` holds the largest collection of each name it may read."""
    largest = max((sizes.get(name, 0) for name in expression.names), default=0)
    cost: int = max(1, largest) ** max(1, expression.depth)
    return cost


def check_cost(expression: Expression, sizes: Mapping[str, int], limit: int) -> None:
    """``BudgetExceeded`` when ``expression`` would cost more than ``limit``."""
    cost = estimated_cost(expression, sizes)
    if cost > limit:
        raise BudgetExceeded(expression.source, cost, limit)


# --- the get() helper ---------------------------------------------------------------------


def get_path(value: Any, path: Any, default: Any) -> Any:
    """``get(value, "a.b.0", default)``: never raises (a raising callback prints to stderr)."""
    if isinstance(path, str):
        parts: Sequence[Any] = path.split(".") if path else []
    elif isinstance(path, list | tuple):
        parts = path
    else:
        return default
    current = value
    for part in parts:
        if isinstance(current, Mapping):
            key = part if isinstance(part, str) else str(part)
            if key not in current:
                return default
            current = current[key]
        elif isinstance(current, list | tuple):
            try:
                index = int(part)
            except (TypeError, ValueError):
                return default
            if not -len(current) <= index < len(current):
                return default
            current = current[index]
        else:
            return default
        if current is None:
            return default
    return default if current is None else current


# --- evaluating ----------------------------------------------------------------------------


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and maps nest in ``value``, counting no further than ``limit + 1``."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        current, depth = pending.pop()
        if isinstance(current, Mapping | list | tuple):
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
            items = current.values() if isinstance(current, Mapping) else current
            pending.extend((item, depth) for item in items)
    return deepest


def bind(context: cel.Context, name: str, value: Any) -> None:
    """Set variable ``name``; ``EvaluationError`` when the value cannot be given to CEL.

    The native converter recurses: values nested thousands deep would overflow its stack
    and kill the process, so depth is checked first (JSON parsers stop near 1000 anyway).
    """
    if nesting_depth(value, MAX_VALUE_DEPTH) > MAX_VALUE_DEPTH:
        raise EvaluationError(name, f"is nested more than {MAX_VALUE_DEPTH} levels deep")
    try:
        context.add_variable(name, value)
    except Exception as error:
        raise EvaluationError(name, f"cannot be given to CEL: {_reason(error)}") from None


def new_context(variables: Mapping[str, Any]) -> cel.Context:
    """A CEL context holding ``variables`` with the extension and helper functions.

    ``EvaluationError`` when a value cannot be given to CEL (see ``bind``).
    """
    context = cel.Context()
    for name, function in EXTENSION_FUNCTIONS.items():
        context.add_function(name, function)
    context.add_function("get", get_path)
    for name, value in variables.items():
        bind(context, name, value)
    return context


def _reason(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no such field {error.args[0]!r}" if error.args else "no such field"
    if isinstance(error, IndexError):
        return f"index out of range ({error})"
    if isinstance(error, ZeroDivisionError):
        return "division by zero"
    text = str(error).strip() or type(error).__name__
    # The bindings append advice ("Check that ...", "CEL does not coerce ...") after the
    # first sentence; the first sentence is the reason.
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text, maxsplit=1)[0]
    return first[:300]


def evaluate(expression: Expression, context: cel.Context) -> Any:
    """The value of ``expression`` in ``context``, as plain Python; ``EvaluationError`` else."""
    try:
        value = expression.program.execute(context)
    except Exception as error:
        raise EvaluationError(expression.source, _reason(error)) from None
    except BaseException as error:
        if not is_panic(error):
            raise
        raise EvaluationError(expression.source, f"CEL failed: {error}") from None
    return unwrap(value)


def unwrap(value: Any) -> Any:
    """An optional's value (or None), recursively; everything else unchanged."""
    if isinstance(value, cel.OptionalValue):
        return unwrap(value.value()) if value.has_value() else None
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    return value


def format_datetime(value: datetime) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``: the form Cal.com takes (OOO dates too)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class NotJSON(ValueError):
    """An expression's value cannot be sent to Cal.com (a duration, bytes, NaN ...)."""


def to_json(value: Any) -> Any:
    """``value`` as JSON data: timestamps become UTC ISO strings; ``NotJSON`` otherwise."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSON(f"{value} is not a JSON number")
        return value
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJSON(f"map key {key!r} is not a string")
            result[key] = to_json(item)
        return result
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, timedelta):
        raise NotJSON("a duration is not a JSON value (use string(d) or int(d.getSeconds()))")
    if isinstance(value, bytes):
        raise NotJSON("bytes are not a JSON value (use string(b))")
    raise NotJSON(f"a {type(value).__name__} is not a JSON value")


def to_text(value: Any) -> str:
    """How a value reads inside interpolated text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(to_json(value), separators=(",", ":"), ensure_ascii=False)
