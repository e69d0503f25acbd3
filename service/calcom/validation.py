"""Check a tool's parameters against its schema and turn them into an HTTP request.

``validate_params`` reports every problem at once (unknown names with suggestions, missing
required ones, wrong types, enum values, constraints), naming the tool and the parameter.
``prepare_request`` then splits the flat parameters into path, query and JSON body.

Two rules keep a call on its own route whatever the values say (they come from webhook
payloads, public forms and language models):

* a path parameter stays inside its segment: empty strings, ``.``, ``..``, ``/``, ``\\`` and
  control characters are refused (``.`` and ``..`` survive percent-encoding and HTTP
  clients collapse them, so ``optionId: ".."`` would address the attribute itself);
* the path and query string together fit in ``MAX_URL_LENGTH`` characters; a longer
  request is refused naming the parameter that makes it long, before anything is sent.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast
from urllib.parse import quote, urlencode

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from calhooks.service.calcom.errors import ParameterProblem, ToolValidationError
from calhooks.service.calcom.tools import Tool

_FORMATS = FormatChecker(formats=["email"])

#: Longest path + query string (encoded, relative to the API base URL) a call may send.
#: Proxies in front of APIs commonly stop at 8 KiB for the whole request line.
MAX_URL_LENGTH = 8000

_DOT_SEGMENTS = frozenset({".", ".."})
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def segment_problem(value: str) -> str | None:
    """Why ``value`` cannot be a path segment of its own, or ``None`` when it can."""
    if not value.strip():
        return "must not be empty"
    if value in _DOT_SEGMENTS:
        return f"{value!r} is not an id (a dot segment would address another route)"
    if "/" in value or "\\" in value:
        return f"{value!r} must not contain '/' or '\\'"
    if any(unicodedata.category(ch) in _CONTROL_CATEGORIES for ch in value):
        return f"{value!r} must not contain control characters"
    return None


@cache
def _validator(tool: Tool) -> Draft202012Validator:
    schema = dict(tool.input_schema)
    schema.pop("additionalProperties")  # unknown names get their own, friendlier message
    return Draft202012Validator(schema, format_checker=_FORMATS)


def _problem(error: ValidationError) -> ParameterProblem:
    if error.validator == "required" and not error.path:
        missing = error.message.split("'")[1] if "'" in error.message else None
        return ParameterProblem(missing, "is required")
    if error.path:
        name = str(error.path[0])
        inner = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in list(error.path)[1:])
        return ParameterProblem(name + inner if inner else name, _reason(error))
    return ParameterProblem(None, error.message)


def _reason(error: ValidationError) -> str:
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in cast(list[Any], error.validator_value))
        return f"{error.instance!r} is not one of {allowed}"
    if error.validator == "type":
        got = type(error.instance).__name__
        return f"expected {error.validator_value}, got {got} {error.instance!r}"
    if error.validator == "pattern" and error.path and str(error.path[0]) in {"start", "end"}:
        return f"{error.instance!r} is not a UTC date-time like 2025-05-01T00:00:00.000Z"
    if error.validator == "oneOf":
        return "does not match any allowed shape"
    return error.message


def validate_params(tool: Tool, params: Mapping[str, Any]) -> None:
    """Raise ``ToolValidationError`` listing every problem; return quietly when all is well."""
    problems: list[ParameterProblem] = []
    for name in params:
        if name not in tool.by_name:
            close = difflib.get_close_matches(name, tool.by_name, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(ParameterProblem(name, f"unknown parameter{hint}"))
    errors = sorted(_validator(tool).iter_errors(dict(params)), key=lambda e: list(e.path))
    problems.extend(_problem(error) for error in errors)
    named = {problem.parameter for problem in problems}
    for parameter in tool.parameters_in("path"):
        value = params.get(parameter.name)
        if parameter.name in named or not isinstance(value, str):
            continue
        if reason := segment_problem(value):
            problems.append(ParameterProblem(parameter.name, reason))
    if not problems:
        problems.extend(_length_problems(tool, params))
    if problems:
        raise ToolValidationError(tool.name, problems)


def _length_problems(tool: Tool, params: Mapping[str, Any]) -> list[ParameterProblem]:
    """A problem naming the parameter that makes the URL too long (none when it fits)."""
    layout = _layout(tool, params)
    length = len(layout.url) + (1 + len(urlencode(layout.query)) if layout.query else 0)
    if length <= MAX_URL_LENGTH:
        return []
    sizes: dict[str, int] = {}
    for parameter in tool.parameters:
        if parameter.location == "body" or parameter.name not in params:
            continue
        value = params[parameter.name]
        if parameter.location == "path":
            sizes[parameter.name] = len(_path_value(parameter.schema, value))
        else:
            values = value if isinstance(value, list) else [value]
            sizes[parameter.name] = len(
                urlencode([(parameter.name, _query_value(v)) for v in values])
            )
    name = max(sizes, key=sizes.__getitem__)
    count = f"{len(params[name])} values, " if isinstance(params[name], list) else ""
    return [
        ParameterProblem(
            name,
            f"too long for a URL ({count}{length} characters with the rest of the request, "
            f"at most {MAX_URL_LENGTH}): split the call into smaller ones",
        )
    ]


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A validated tool call laid out as HTTP: ``url`` is relative to the API base URL."""

    method: str
    url: str
    query: list[tuple[str, str]] = field(default_factory=list)
    body: dict[str, Any] | None = None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _path_value(schema: Mapping[str, Any], value: Any) -> str:
    # An integer id travels as digits even when JSON gave it as 3.0.
    if schema.get("type") == "integer" and isinstance(value, float):
        value = int(value)
    return quote(str(value), safe="")


def prepare_request(tool: Tool, params: Mapping[str, Any]) -> PreparedRequest:
    """Validate ``params`` and split them into path, query string and JSON body."""
    validate_params(tool, params)
    return _layout(tool, params)


def _layout(tool: Tool, params: Mapping[str, Any]) -> PreparedRequest:
    url = tool.path
    query: list[tuple[str, str]] = []
    body: dict[str, Any] = {}
    for parameter in tool.parameters:
        if parameter.name not in params:
            continue
        value = params[parameter.name]
        if parameter.location == "path":
            url = url.replace("{" + parameter.name + "}", _path_value(parameter.schema, value))
        elif parameter.location == "query":
            values = value if isinstance(value, list) else [value]
            query.extend((parameter.name, _query_value(v)) for v in values)
        else:
            body[parameter.name] = value
    has_body = bool(tool.parameters_in("body")) or tool.method in ("POST", "PATCH")
    return PreparedRequest(tool.method, url, query, body if has_body else None)
