"""Turn an HTTP request into a tool's parameters the way Cal.com's pipes do, or answer 400.

Everything derives from the tools registry (``Tool.parameters`` and ``Tool.input_schema``,
the schemas the client validates with), so the sandbox can never accept what the client
rejects or the other way round:

* path parameters typed ``integer`` go through NestJS's ``ParseIntPipe`` ("Validation failed
  (numeric string is expected)");
* query values arrive as strings and are converted (integers, booleans; arrays from repeated
  parameters or one comma-separated value); unknown query names are ignored;
* body properties the schema does not declare are silently stripped, nested ones too
  (class-validator's whitelist); on create, declared defaults are filled in;
* the result is validated against ``Tool.input_schema`` and every violation is reported in
  one 400 whose ``details.errors`` mimic class-validator's errors.

Compiled validators are cached per tool: the sandbox also serves benchmarks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, cast

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from calhooks.service.calcom.overlay import OOO_DATE_PATTERN
from calhooks.service.calcom.tools import Parameter, Tool
from calhooks.service.sandbox.errors import BAD_REQUEST, ApiError, bad_request

_FORMATS = FormatChecker(formats=["email"])
_NUMERIC = re.compile(r"^-?\d+$")
_REQUIRED = re.compile(r"^'(.+)' is a required property$")
_TYPE_MESSAGES = {
    "integer": ("isInt", "must be an integer number"),
    "number": ("isNumber", "must be a number conforming to the specified constraints"),
    "string": ("isString", "must be a string"),
    "boolean": ("isBoolean", "must be a boolean value"),
    "array": ("isArray", "must be an array"),
    "object": ("isObject", "must be an object"),
}


@cache
def _validator(tool: Tool) -> Draft202012Validator:
    return Draft202012Validator(dict(tool.input_schema), format_checker=_FORMATS)


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return [str(k) for k in kind]
    return [str(kind)] if kind else []


def _convert_scalar(text: str, schema: Mapping[str, Any]) -> Any:
    """A query string value as the schema's scalar type, or unchanged if it does not parse."""
    kinds = _types(schema)
    if "integer" in kinds and _NUMERIC.match(text):
        return int(text)
    if "number" in kinds:
        try:
            return float(text)
        except ValueError:
            return text
    if "boolean" in kinds and text in ("true", "false"):
        return text == "true"
    return text


def _convert_query(parameter: Parameter, values: Sequence[str]) -> Any:
    schema = parameter.schema
    if "array" in _types(schema):
        items = schema.get("items", {})
        parts = [part.strip() for value in values for part in value.split(",")]
        return [_convert_scalar(part, items) for part in parts if part]
    if len(values) > 1:
        return list(values)  # a repeated scalar: the type check reports it
    return _convert_scalar(values[0], schema)


def _whitelist(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` without object properties its schema does not declare, at every depth."""
    properties = schema.get("properties")
    if isinstance(value, dict) and isinstance(properties, Mapping):
        if "additionalProperties" in schema:
            return value  # a free-form map (e.g. metadata): its keys are data
        return {k: _whitelist(v, properties[k]) for k, v in value.items() if k in properties}
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        return [_whitelist(v, items) for v in value]
    return value


def _path_value(parameter: Parameter, text: str) -> Any:
    if "integer" not in _types(parameter.schema):
        return text
    if not _NUMERIC.match(text):
        raise bad_request("Validation failed (numeric string is expected)")
    return int(text)


def parse_request(
    tool: Tool,
    path: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The tool's validated, converted parameters from one request; ``ApiError`` 400 if bad."""
    params: dict[str, Any] = {}
    grouped: dict[str, list[str]] = {}
    for name, value in query:
        grouped.setdefault(name, []).append(value)
    body = body or {}
    for parameter in tool.parameters:
        name = parameter.name
        if parameter.location == "path":
            params[name] = _path_value(parameter, path[name])
        elif parameter.location == "query":
            if name in grouped:
                params[name] = _convert_query(parameter, grouped[name])
            elif "default" in parameter.schema:
                params[name] = parameter.schema["default"]
        elif name in body:
            params[name] = _whitelist(body[name], parameter.schema)
        elif tool.method == "POST" and "default" in parameter.schema:
            params[name] = parameter.schema["default"]
    errors = list(_validator(tool).iter_errors(params))
    if errors:
        raise validation_error(errors)
    return params


def _property(error: ValidationError) -> str:
    names = [str(part) for part in error.absolute_path]
    if error.validator == "required":
        found = _REQUIRED.match(error.message)
        names.append(found.group(1) if found else "?")
    return ".".join(names) or "body"


def _constraint(error: ValidationError, prop: str) -> tuple[str, str]:
    """class-validator's constraint name and message for one schema violation."""
    rule, expected = error.validator, error.validator_value
    if rule == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        name, text = _TYPE_MESSAGES.get(str(kinds[0]), ("isType", f"must be {kinds[0]}"))
        return name, f"{prop} {text}"
    if rule == "required":
        return "isDefined", f"{prop} should not be null or undefined"
    if rule == "enum":
        allowed = ", ".join(str(v) for v in cast(list[Any], expected) if v is not None)
        return "isEnum", f"{prop} must be one of the following values: {allowed}"
    if rule == "minimum":
        return "min", f"{prop} must not be less than {expected}"
    if rule == "maximum":
        return "max", f"{prop} must not be greater than {expected}"
    if rule == "minLength":
        if expected == 1:
            return "isNotEmpty", f"{prop} should not be empty"
        return "minLength", f"{prop} must be longer than or equal to {expected} characters"
    if rule == "maxLength":
        return "maxLength", f"{prop} must be shorter than or equal to {expected} characters"
    if rule == "minItems":
        return "arrayMinSize", f"{prop} must contain at least {expected} elements"
    if rule == "format" and expected == "email":
        return "isEmail", f"{prop} must be an email"
    if rule == "pattern" and expected == OOO_DATE_PATTERN:
        return "isDate", "Invalid Date."
    if rule == "oneOf":
        return "isValid", f"{prop} does not match any accepted shape"
    return str(rule), f"{prop}: {error.message}"


def validation_error(errors: Sequence[ValidationError]) -> ApiError:
    """One 400 listing every violation, grouped by property like class-validator's errors."""
    by_property: dict[str, dict[str, Any]] = {}
    messages: list[str] = []
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        prop = _property(error)
        name, message = _constraint(error, prop)
        entry = by_property.setdefault(
            prop,
            {
                "property": prop,
                "value": None if error.validator == "required" else error.instance,
                "constraints": {},
            },
        )
        entry["constraints"][name] = message
        messages.append(message)
    return ApiError(400, BAD_REQUEST, "; ".join(messages), {"errors": list(by_property.values())})
