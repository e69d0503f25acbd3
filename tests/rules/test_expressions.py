"""CEL in the rules: compiling, what an expression refers to, evaluating over real Cal.com
payloads, the get() helper, JSON conversion and the ``${{ }}`` template syntax."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import cel
import pytest

from calhooks.workers.rules.evaluation import (
    EvaluationError,
    NotJSON,
    evaluate,
    get_path,
    nesting_depth,
    new_context,
    to_json,
    to_text,
)
from calhooks.workers.rules.expressions import (
    EXTENSION_FUNCTIONS,
    MAX_EXPRESSION_LENGTH,
    MAX_VALUE_DEPTH,
    NATIVE_FUNCTIONS,
    ExpressionSyntaxError,
    compile_expression,
    strip_string_literals,
    unknown_function_problems,
)
from calhooks.workers.rules.runner import EventContext
from calhooks.workers.rules.templates import TemplateSyntaxError, split_template, whole_expression
from tests.rules.helpers import fixture_event


def run(source: str, **variables: Any) -> Any:
    return evaluate(compile_expression(source), new_context(variables))


# --- compiling -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("1 +", "mismatched input"),
        ('"unterminated', "token recognition error"),
        ("a.?b", "unsupported syntax"),
        ("has(a)", "invalid argument to has() macro"),
        ("   ", "empty expression"),
    ],
)
def test_syntax_errors_are_readable(source: str, fragment: str) -> None:
    """A syntax error says what and where in one line, without the parser's token dump."""
    with pytest.raises(ExpressionSyntaxError) as caught:
        compile_expression(source)
    assert fragment in str(caught.value)
    assert "expecting {" not in str(caught.value)


def test_syntax_error_position() -> None:
    with pytest.raises(ExpressionSyntaxError, match=r"at column 4"):
        compile_expression("1 +")
    with pytest.raises(ExpressionSyntaxError, match=r"at line 2 column"):
        compile_expression("a &&\n b +")


def test_overlong_expressions_are_refused_before_the_parser() -> None:
    """Past the limit nothing reaches the native parser (which overflows on ~16k links)."""
    with pytest.raises(ExpressionSyntaxError, match="limit"):
        compile_expression("1" + "+1" * 20_000)
    compile_expression("1" + "+1" * ((MAX_EXPRESSION_LENGTH - 1) // 2))


def test_references_found_statically() -> None:
    """Names, step ids, env names and event fields are known without evaluating."""
    expression = compile_expression(
        'steps.user[0].id == steps["other"].x && env.org_id > 0 && env["flag"]'
        ' && event.trigger == "X" && payload.attendees.exists(a, a.email != "steps.fake")'
        " && math.greatest([1, 2]) > 0"
    )
    assert expression.names == {"steps", "env", "event", "payload"}
    assert expression.steps == {"user", "other"}
    assert expression.env == {"org_id", "flag"}
    assert expression.event == {"trigger"}
    assert "exists" not in expression.functions
    assert "greatest" in expression.functions


def test_string_literals_do_not_count_as_references() -> None:
    assert strip_string_literals("""a + "steps.x" + 'env.y' + r"z" """) == 'a + "" + "" + "" '
    assert compile_expression('"steps.nope" + payload.x').steps == frozenset()


def test_comprehension_variables_are_not_free_names() -> None:
    expression = compile_expression("payload.a.map(x, x.b).filter(y, y > 0).all(z, z < 9)")
    assert expression.names == {"payload"}


def test_unknown_functions_are_named_with_a_suggestion() -> None:
    expression = compile_expression("payload.email.lowercase() == foo(1)")
    first, second = unknown_function_problems(expression)
    assert first.startswith("unknown function foo()")
    assert second == "unknown function lowercase() (did you mean lowerAscii()?)"
    assert unknown_function_problems(compile_expression('"A".lowerAscii().size() > 0')) == []


@pytest.mark.parametrize("name", sorted(NATIVE_FUNCTIONS))
def test_every_native_function_listed_exists(name: str) -> None:
    """The allow-list of native functions is true of the installed ``cel``."""
    calls = {
        "size": 'size("ab")',
        "int": 'int("1")',
        "uint": "uint(1)",
        "double": "double(1)",
        "string": "string(1)",
        "bytes": 'bytes("a")',
        "timestamp": 'timestamp("2025-01-01T00:00:00Z")',
        "duration": 'duration("1h")',
        "dyn": "dyn(1)",
        "type": "type(1)",
        "contains": '"ab".contains("a")',
        "startsWith": '"ab".startsWith("a")',
        "endsWith": '"ab".endsWith("b")',
        "matches": '"ab".matches("a")',
        "of": "optional.of(1)",
        "none": "optional.none()",
        "ofNonZeroValue": "optional.ofNonZeroValue(1)",
        "orValue": "optional.none().orValue(2)",
        "or": "optional.none().or(optional.of(1))",
        "hasValue": "optional.of(1).hasValue()",
        "value": "optional.of(1).value()",
    }
    source = calls.get(name, f'timestamp("2025-03-04T05:06:07Z").{name}()')
    assert name in compile_expression(source).functions
    run(source)


@pytest.mark.parametrize("name", sorted(EXTENSION_FUNCTIONS))
def test_every_extension_function_is_registered(name: str) -> None:
    """Each extension function is callable in a rules context (by its dotted name)."""
    context = new_context({})
    assert name in context.functions


def test_unbounded_extensions_are_left_out() -> None:
    with pytest.raises(EvaluationError):
        run("lists.range(100000000)")


# --- evaluating over real payloads ---------------------------------------------------------


def variables(trigger: str) -> dict[str, Any]:
    context = EventContext.of(fixture_event(trigger), {"org_id": 1, "org_domain": "acme.example"})
    return {"payload": context.payload, "event": context.event, "env": context.env}


@pytest.mark.parametrize(
    ("trigger", "source", "expected"),
    [
        ("BOOKING_CREATED", 'payload.organizer.email.endsWith("@" + env.org_domain)', True),
        ("BOOKING_CREATED", "payload.attendees.map(a, a.email)", ["sam@client.example"]),
        ("BOOKING_CREATED", "payload.attendees[0].phoneNumber == null", True),
        ("BOOKING_CREATED", "payload.price == 0.0 && payload.length == 30", True),
        ("BOOKING_CREATED", "timestamp(payload.endTime) - timestamp(payload.startTime)",
         timedelta(minutes=30)),
        ("BOOKING_CREATED", 'event.trigger + " " + event.createdAt',
         "BOOKING_CREATED 2025-10-10T09:12:44.301Z"),
        ("BOOKING_CANCELLED", "payload.status == \"CANCELLED\" && has(payload.cancellationReason)",
         True),
        ("BOOKING_RESCHEDULED", "has(payload.rescheduleUid)", True),
        ("FORM_SUBMITTED", 'payload.responses["company-size"].value', "51-200"),
        ("FORM_SUBMITTED", 'payload.responses["company-size"].response.label', "51-200"),
        ("MEETING_ENDED", "has(payload.uid) && event.createdAt == null", True),
        ("OOO_CREATED", "payload.oooEntry.reason.reason", "vacation"),
        ("BOOKING_NO_SHOW_UPDATED", "payload.attendees.filter(a, a.noShow).size()", 1),
        ("PING", 'payload.type == "Test"', True),
    ],
)  # fmt: skip
def test_cel_over_cal_com_example_payloads(trigger: str, source: str, expected: Any) -> None:
    """Expressions as rules write them, over each trigger's example delivery."""
    assert run(source, **variables(trigger)) == expected


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("payload.team.name", "no such field 'team'"),
        ("payload.attendees[3]", "index out of range"),
        ('"a" + 1', "Unsupported operation: string + int"),
        ("payload.destinationCalendar.id", "No such overload"),
        ("1 / 0", "division by zero"),
        ("nope.x", "Undefined variable or function"),
    ],
)
def test_evaluation_errors_have_a_short_reason(source: str, reason: str) -> None:
    """Missing fields, bad indexes and type errors become EvaluationError with a reason."""
    with pytest.raises(EvaluationError) as caught:
        run(source, **variables("BOOKING_CREATED"))
    assert reason in caught.value.reason
    assert "Check that" not in caught.value.reason
    assert caught.value.source == source


def test_has_and_defaults_idioms() -> None:
    """has(), get() and first().orValue() give defaults for absent or null fields."""
    data = variables("BOOKING_CREATED")
    assert run('has(payload.team) ? payload.team.name : "none"', **data) == "none"
    assert run('get(payload, "team.name", "none")', **data) == "none"
    assert run('get(payload, "organizer.email", "")', **data) == "dana@acme.example"
    assert run('get(payload, "attendees.0.phoneNumber", "n/a")', **data) == "n/a"
    assert run('get(payload, ["responses", "notes", "value"], "")', **data) == (
        "Looking forward to it"
    )
    assert run("payload.attendees.filter(a, false).first().orValue(null)", **data) is None
    assert run('payload.attendees.first().orValue({"email": ""}).email', **data) == (
        "sam@client.example"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.b", 1),
        ("a.c", "d"),
        ("l.1.x", 2),
        ("l.-1.x", 2),
        ("l.5.x", "d"),
        ("l.x", "d"),
        ("a.b.c", "d"),
        ("n", "d"),
        ("", {"a": {"b": 1}, "l": [{"x": 1}, {"x": 2}], "n": None}),
        (["a", "b"], 1),
        (3, "d"),
    ],
)
def test_get_path(path: Any, expected: Any) -> None:
    """get() walks maps and lists and never raises."""
    value = {"a": {"b": 1}, "l": [{"x": 1}, {"x": 2}], "n": None}
    assert get_path(value, path, "d") == expected


# --- values for Cal.com ---------------------------------------------------------------------


def test_to_json_converts_timestamps_and_optionals() -> None:
    """Timestamps become Cal.com's UTC form (ms and Z); optionals their value or null."""
    moment = datetime(2031, 3, 3, 9, 0, 0, 120_000, tzinfo=UTC)
    assert to_json({"t": moment, "l": [1, "x", None]}) == {
        "t": "2031-03-03T09:00:00.120Z",
        "l": [1, "x", None],
    }
    assert run('timestamp("2031-03-03T09:00:00+02:00")') == datetime(2031, 3, 3, 7, tzinfo=UTC)
    assert run("optional.of(3)") == 3
    assert run("optional.none()") is None
    assert run("[optional.of(1)]") == [1]


@pytest.mark.parametrize(
    "value", [timedelta(hours=1), b"x", float("nan"), {1: "a"}, object(), cel.Context()]
)
def test_to_json_refuses_what_is_not_json(value: Any) -> None:
    with pytest.raises(NotJSON):
        to_json(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [("a", "a"), (None, ""), (True, "true"), (3, "3"), (1.5, "1.5"), ([1, "a"], '[1,"a"]')],
)
def test_to_text_inside_interpolation(value: Any, text: str) -> None:
    assert to_text(value) == text


def test_deeply_nested_values_are_an_evaluation_error() -> None:
    """Values nested past MAX_VALUE_DEPTH are refused before the native converter sees them
    (which would overflow its stack a few thousand levels down and kill the process)."""
    value: Any = 1
    for _ in range(MAX_VALUE_DEPTH // 2):
        value = {"a": [value]}
    new_context({"payload": value})
    with pytest.raises(EvaluationError, match="nested more than"):
        new_context({"payload": {"a": [value]}})
    for _ in range(50_000):
        value = [value]
    with pytest.raises(EvaluationError, match="nested more than"):
        new_context({"payload": value})
    assert nesting_depth({"a": [1, {"b": []}], "c": 2}, 10) == 4
    assert nesting_depth([[[[1]]]], 2) == 3


# --- ${{ }} ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("plain", ["plain"]),
        ("${{ a }}", [("a",)]),
        ("x ${{ a }} y ${{b}}", ["x ", ("a",), " y ", ("b",)]),
        ('${{ {"a": {"b": 1}} }}', [('{"a": {"b": 1}}',)]),
        ('${{ "}}" + x }}!', [('"}}" + x',), "!"]),
        ("${{ a }}${{ b }}", [("a",), ("b",)]),
        ("$ {{ not }}", ["$ {{ not }}"]),
    ],
)
def test_split_template(text: str, parts: list[Any]) -> None:
    """Expressions end at the first ``}}`` outside strings and CEL map literals."""
    assert split_template(text) == parts


@pytest.mark.parametrize(("text", "message"), [("${{ a ", "no closing"), ("${{ }}", "empty")])
def test_template_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=message):
        split_template(text)


@pytest.mark.parametrize(
    ("text", "expression"),
    [("${{ a }}", "a"), ("  ${{a.b}} ", "a.b"), ("x${{ a }}", None), ("${{a}}${{b}}", None)],
)
def test_whole_expression(text: str, expression: str | None) -> None:
    """Only a value that is exactly one ``${{ }}`` keeps the expression's type."""
    assert whole_expression(text) == expression
