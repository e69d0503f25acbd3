"""CEL for the rules: compiling an expression and the static facts about it.

Evaluating is in ``evaluation`` (values in, values out, the cost budget) and ``${{ }}``
templates in ``templates``; this module holds what is known before anything runs.

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
raised instead of evaluating (``evaluation.check_cost``): the rule fails (dead letter) with that
reason. The nesting depth is known here, at compile time (``comprehension_depth``).

**Names an expression sees**: ``payload`` (the event's payload), ``event`` (``id``,
``trigger``, ``createdAt``, ``receivedAt``), ``env`` (the rules' constants), ``steps``
(outputs of the rule's earlier steps, by step id) and, inside a ``for_each`` step, its loop
variable. Besides CEL's own functions and the extensions there is one helper:
``get(value, "a.b.0.c", default)`` walks a dotted path (or a list of keys) through maps
and lists and gives ``default`` when any part is missing or null.

**Literals and expressions** in parameter values are ``templates``' concern.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel
from cel import stdlib as cel_stdlib

#: Longest expression accepted (characters); see the module docstring for why there is one.
MAX_EXPRESSION_LENGTH = 4096
#: Deepest nesting of lists and maps handed to CEL (see ``bind``).
MAX_VALUE_DEPTH = 256

#: Top-level names every expression may use.
ROOT_NAMES = ("payload", "event", "env", "steps")
#: Fields of ``event`` (``source``: ``"webhook"`` for a delivery, ``"reconcile"`` for an
#: event a reconciliation pass produced).
EVENT_FIELDS = ("id", "trigger", "createdAt", "receivedAt", "source")
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
STRING_LITERAL = re.compile(
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
    return STRING_LITERAL.sub(lambda m: '""', source)


def _references(pattern: re.Pattern[str], source: str) -> frozenset[str]:
    """Names ``pattern`` captures in ``source``, except in matches that start in a string."""
    literals = [match.span() for match in STRING_LITERAL.finditer(source)]
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
        if not is_panic(error):
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


def is_panic(error: BaseException) -> bool:
    return type(error).__name__ == "PanicException"


def unknown_function_problems(expression: Expression) -> list[str]:
    """A message per function the expression calls that CEL here does not have."""
    problems = []
    for name in sorted(expression.functions - KNOWN_FUNCTIONS):
        close = difflib.get_close_matches(name, sorted(KNOWN_FUNCTIONS), n=1)
        hint = f" (did you mean {close[0]}()?)" if close else ""
        problems.append(f"unknown function {name}(){hint}")
    return problems
