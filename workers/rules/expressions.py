"""CEL for the rules: compiling, static facts about an expression, evaluating, and ``${{ }}``.

**Which CEL.** Rules use ``common-expression-language`` (import ``cel``: Python bindings to
the Rust ``cel`` crate), not ``cel-python`` (``celpy``, pure Python). Measured by
``bench/rules_cel.py`` on Cal.com's example booking payload, ``cel`` evaluates the rules'
kind of expressions 100-500x faster (0.2-1.5 µs against 80-220 µs) and compiles ~10x
faster; it also gets more of the spec right where rules need it (``1 == 1.0`` is true where
celpy raises; ``optional.of(x).orValue(y)`` works), returns plain Python values instead of
wrapper types, ships type stubs and has no dependencies (celpy pulls in lark, pendulum,
google-re2 and jmespath). Neither parses the optional-field syntax ``a.?b``; defaults are
written with ``has()``, ``get()`` or ``first().orValue()`` (below). Two things ``cel`` needs
handled here: its extension functions (strings, lists, math, sets) are opt-in Python
callbacks, so they are registered on every context (minus ``lists.range``, which would let
an expression allocate without bound); and its parser overflows the native stack on
pathologically long operator chains (~16 000 links crash the process), so an expression
is refused above ``MAX_EXPRESSION_LENGTH`` characters, far below that.

**A cost budget.** ``cel`` evaluates synchronously, holding the GIL, with no step limit: it
cannot be cut off once started, and a nested ``exists`` over a 3000-item payload list runs
for seconds while the worker's event loop stands still. So an expression's cost is bounded
*before* it runs: ``estimated_cost`` is ``n ** d`` where ``d`` is how deeply its
comprehensions nest (``all``, ``exists``, ``exists_one``, ``map``, ``filter``; an ``in`` or a
``sets.`` function inside one counts as one more level) and ``n`` the largest list or map in
the values it reads. Past the budget (``CALHOOKS_RULES_COST_LIMIT``) ``BudgetExceeded`` is
raised instead of evaluating: the rule fails (dead letter) with that reason.

**Names an expression sees**: ``payload`` (the event's payload), ``event`` (``id``,
``trigger``, ``createdAt``, ``receivedAt``), ``env`` (the rules' constants), ``steps``
(outputs of the rule's earlier steps, by step id) and, inside a ``for_each`` step, its loop
variable. Besides CEL's own functions and the extensions there is one helper:
``get(value, "a.b.0.c", default)`` walks a dotted path (or a list of keys) through maps
and lists and gives ``default`` when any part is missing or null.

**Literals and expressions** in parameter values: a plain YAML value is a literal;
``${{ expr }}`` as the whole value is an expression whose result keeps its type (a number
stays a number, a list a list); ``${{ }}`` inside longer text is interpolated into a string
(``"booking ${{ payload.uid }}"``) - the same convention as GitHub Actions. Conditions
(``when``) and ``for_each`` are always expressions and need no ``${{ }}`` (it is accepted).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import cel
from cel import stdlib as cel_stdlib

#: Longest expression accepted (characters); see the module docstring for why there is one.
MAX_EXPRESSION_LENGTH = 4096
#: Deepest nesting of lists and maps handed to CEL (see ``bind``).
MAX_VALUE_DEPTH = 256

#: Top-level names every expression may use.
ROOT_NAMES = ("payload", "event", "env", "steps")
#: Fields of ``event``.
EVENT_FIELDS = ("id", "trigger", "createdAt", "receivedAt")
#: Namespaces of extension functions (``math.greatest``): the parser reports them as names.
NAMESPACES = frozenset({"math", "sets", "strings", "lists", "optional"})

#: Functions ``cel`` implements natively (``tests/rules/test_expressions.py`` proves each
#: one runs, so this list cannot go stale silently when the library changes).
NATIVE_FUNCTIONS = frozenset(
    {
        "size",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "timestamp",
        "duration",
        "dyn",
        "type",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "getFullYear",
        "getMonth",
        "getDate",
        "getDayOfMonth",
        "getDayOfYear",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
        "of",
        "none",
        "ofNonZeroValue",
        "orValue",
        "or",
        "hasValue",
        "value",
    }
)
#: Extension functions left out: ``lists.range(n)`` builds an n-element list (unbounded
#: memory from one call); base64 has no use in rules.
_EXCLUDED_EXTENSIONS = frozenset({"lists.range", "base64.encode", "base64.decode"})
EXTENSION_FUNCTIONS: Mapping[str, Any] = {
    name: function
    for name, function in cel_stdlib.STDLIB_FUNCTIONS.items()
    if name not in _EXCLUDED_EXTENSIONS
}
HELPER_FUNCTIONS = frozenset({"get"})
#: Every function name an expression may call (namespaced ones by their last part, as the
#: parser reports them).
KNOWN_FUNCTIONS = frozenset(
    NATIVE_FUNCTIONS | HELPER_FUNCTIONS | {name.rsplit(".", 1)[-1] for name in EXTENSION_FUNCTIONS}
)

# References by regular expression, kept: ``cel`` exposes no parse tree (bench/handwritten.py cel).
_STRING_LITERAL = re.compile(
    r"""[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")""",
    re.DOTALL,
)
_BOUND_NAME = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_STEP_REFERENCE = re.compile(
    r"(?<![\w.])steps\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(?:\"([^\"]*)\"|'([^']*)')\s*\])"
)
_ENV_REFERENCE = re.compile(
    r"(?<![\w.])env\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(?:\"([^\"]*)\"|'([^']*)')\s*\])"
)
_EVENT_REFERENCE = re.compile(r"(?<![\w.])event\s*\.\s*([A-Za-z_]\w*)")
_PARSE_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")
_OPERATOR = re.compile(r"^[^A-Za-z]")  # `_+_`, `_[_]`, `@in`, `!_`: operators


class ExpressionSyntaxError(ValueError):
    """An expression does not compile; the message says where and why."""


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


@dataclass(frozen=True, eq=False)
class Expression:
    """A compiled CEL expression and what it refers to, found without running it."""

    source: str
    program: cel.Program
    #: Line of the rules file the expression is written on (0: not from a file).
    line: int
    #: Free top-level names (comprehension variables and function namespaces left out).
    names: frozenset[str]
    functions: frozenset[str]
    steps: frozenset[str]
    env: frozenset[str]
    event: frozenset[str]
    #: How deeply its comprehensions nest (see ``comprehension_depth``).
    depth: int = 0

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compact(source: str, limit: int = 160) -> str:
    """``source`` on one line (runs of whitespace as one space), cut at ``limit``."""
    text = " ".join(source.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def strip_string_literals(source: str) -> str:
    """``source`` with the contents of its string literals blanked (for reference scans)."""
    return _STRING_LITERAL.sub(lambda m: '""', source)


def _references(pattern: re.Pattern[str], source: str) -> frozenset[str]:
    """Names ``pattern`` captures in ``source``, except in matches that start in a string."""
    literals = [match.span() for match in _STRING_LITERAL.finditer(source)]
    found = set()
    for match in pattern.finditer(source):
        if any(start <= match.start() < end for start, end in literals):
            continue
        found.add(next(group for group in match.groups() if group is not None))
    return frozenset(found)


def _syntax_message(error: Exception) -> str:
    text = str(error)
    match = _PARSE_ERROR.search(text)
    if match is None:
        return text.split("\n", 1)[0][:300]
    line, column, reason = match.groups()
    reason = re.sub(r" expecting \{.*", "", reason)  # the token list is noise for a reader
    where = f"column {column}" if line == "1" else f"line {line} column {column}"
    return f"{reason.strip()} (at {where})"


def compile_expression(source: str, line: int = 0) -> Expression:
    """Compile ``source``; ``ExpressionSyntaxError`` with a readable reason otherwise."""
    if not source.strip():
        raise ExpressionSyntaxError("empty expression")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionSyntaxError(
            f"expression is {len(source)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
        )
    if "\x00" in source:
        raise ExpressionSyntaxError("expression contains a NUL character")
    try:
        program = cel.compile(source)
        references = program.references()
    except Exception as error:  # the bindings raise ValueError, sometimes others
        raise ExpressionSyntaxError(_syntax_message(error)) from None
    except BaseException as error:  # a Rust panic surfaces as pyo3's PanicException
        if not _is_panic(error):
            raise
        raise ExpressionSyntaxError(f"the CEL parser failed on this expression: {error}") from None
    code = strip_string_literals(source)
    bound = set(_BOUND_NAME.findall(code))
    names = frozenset(references["variables"]) - bound - NAMESPACES
    functions = frozenset(f for f in references["functions"] if not _OPERATOR.match(f))
    return Expression(
        source=source,
        program=program,
        line=line,
        names=names,
        functions=functions,
        steps=_references(_STEP_REFERENCE, source) if "steps" in names else frozenset(),
        env=_references(_ENV_REFERENCE, source) if "env" in names else frozenset(),
        event=_references(_EVENT_REFERENCE, source) if "event" in names else frozenset(),
        depth=comprehension_depth(code),
    )


_MACRO_CALL = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\($")
_INNER_SCAN = re.compile(r"\bin\b|\bsets\s*\.")


def comprehension_depth(code: str) -> int:
    """How deeply comprehension macros nest in ``code`` (string literals blanked); an ``in``
    or a ``sets.`` function inside one counts as one level more (each is a scan too)."""
    stack: list[bool] = []  # one per open parenthesis: is it a macro's?
    deepest = 0
    for position, char in enumerate(code):
        if char == "(":
            stack.append(bool(_MACRO_CALL.search(code[max(0, position - 24) : position + 1])))
            deepest = max(deepest, sum(stack))
        elif char == ")" and stack:
            stack.pop()
        elif stack and _INNER_SCAN.match(code, position) and _word_starts(code, position):
            deepest = max(deepest, sum(stack) + 1)
    return deepest


def _word_starts(code: str, position: int) -> bool:
    return position == 0 or not (code[position - 1].isalnum() or code[position - 1] == "_")


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


def _is_panic(error: BaseException) -> bool:
    return type(error).__name__ == "PanicException"


def unknown_function_problems(expression: Expression) -> list[str]:
    """A message per function the expression calls that CEL here does not have."""
    problems = []
    for name in sorted(expression.functions - KNOWN_FUNCTIONS):
        close = difflib.get_close_matches(name, sorted(KNOWN_FUNCTIONS), n=1)
        hint = f" (did you mean {close[0]}()?)" if close else ""
        problems.append(f"unknown function {name}(){hint}")
    return problems


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
        if not _is_panic(error):
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


# --- ${{ }} templates ----------------------------------------------------------------------

OPEN = "${{"
CLOSE = "}}"


class TemplateSyntaxError(ValueError):
    """A ``${{`` without its ``}}``, or an empty ``${{ }}``."""


def _expression_end(text: str, start: int) -> int:
    """Index of the ``}}`` closing the expression starting at ``start`` (-1 if none).

    Braces of CEL map literals and string literals are skipped, so
    ``${{ {"a": {"b": 1}} }}`` and ``${{ "}}" }}`` end where they should.
    """
    depth = 0
    index = start
    while index < len(text):
        char = text[index]
        if char in "\"'":
            match = _STRING_LITERAL.match(text, index)
            if match is None:
                return -1
            index = match.end()
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0 and text.startswith(CLOSE, index):
                return index
            depth = max(0, depth - 1)
        index += 1
    return -1


def split_template(text: str) -> list[str | tuple[str]]:
    """``text`` as literal strings and ``(expression,)`` parts; [] parts never empty."""
    parts: list[str | tuple[str]] = []
    position = 0
    while True:
        start = text.find(OPEN, position)
        if start < 0:
            if position < len(text):
                parts.append(text[position:])
            return parts
        if start > position:
            parts.append(text[position:start])
        end = _expression_end(text, start + len(OPEN))
        if end < 0:
            raise TemplateSyntaxError(f"{OPEN} at character {start + 1} has no closing {CLOSE}")
        source = text[start + len(OPEN) : end].strip()
        if not source:
            raise TemplateSyntaxError(f"empty {OPEN} {CLOSE}")
        parts.append((source,))
        position = end + len(CLOSE)


def whole_expression(text: str) -> str | None:
    """The expression when ``text`` is exactly one ``${{ expr }}`` (spaces around allowed)."""
    stripped = text.strip()
    if not stripped.startswith(OPEN):
        return None
    parts = split_template(stripped)
    if len(parts) == 1 and isinstance(parts[0], tuple):
        return parts[0][0]
    return None
