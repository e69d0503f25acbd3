"""The 37 Cal.com organization tools: the single source of truth for name, method, path and
parameters.

Built at import from the corrected OpenAPI document (``spec.load_document``). The client,
the CLI, the rule validator, the sandbox and the MCP server all read ``TOOLS``; nothing
else describes an operation.

A tool's parameters are flat: path, query and body fields share one namespace, as in the
catalog (``orgId``, ``userId``, ``start`` ...). ``Tool.input_schema`` is that namespace as
one JSON Schema object.

Internal operations: the document also holds read-only operations calhooks calls itself
but does not offer as tools (marked ``x-calhooks-internal``; today the organization's
bookings, ``cal_organizations_bookings_controller_get_all_org_team_bookings``). They are
``Tool`` objects in ``INTERNAL``, callable through the client and served by the sandbox,
but absent from ``TOOLS`` - so not in the MCP catalog, ``tools list`` or the rules.
``OPERATIONS`` is both; ``get_operation`` looks a name up there.

Naming: a tool is ``cal_`` + snake_case(operationId), except the managed-organizations
group, which the catalog names ``cal_organizations_controller_*`` although its operationIds
are ``OrganizationsOrganizationsController_*`` (FACTS §6.1).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

from calhooks.service.calcom.errors import UnknownToolError
from calhooks.service.calcom.overlay import SECRET_MARK
from calhooks.service.calcom.spec import load_document, to_json_schema

Location = Literal["path", "query", "body"]

#: Where a credential sits in a value: property names, ``*`` for every item of a list.
FieldPath = tuple[str, ...]

_CATALOG_RENAMES = {"OrganizationsOrganizationsController": "OrganizationsController"}
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def tool_name(operation_id: str) -> str:
    """The catalog's tool name for an OpenAPI operationId."""
    controller, _, method = operation_id.partition("_")
    controller = _CATALOG_RENAMES.get(controller, controller)
    # "UsersOOOController" -> "users_ooocontroller": acronyms stay glued to the next word.
    snake = "_".join(_CAMEL_BOUNDARY.sub("_", part).lower() for part in (controller, method))
    return "cal_" + snake


def secret_paths(schema: Any, prefix: FieldPath = ()) -> tuple[FieldPath, ...]:
    """Paths of the fields marked as credentials (``x-calhooks-secret``) in ``schema``."""
    if not isinstance(schema, Mapping):
        return ()
    found: list[FieldPath] = []
    for name, field_schema in (schema.get("properties") or {}).items():
        if isinstance(field_schema, Mapping) and field_schema.get(SECRET_MARK):
            found.append((*prefix, name))
        else:
            found.extend(secret_paths(field_schema, (*prefix, name)))
    if "items" in schema:
        found.extend(secret_paths(schema["items"], (*prefix, "*")))
    for keyword in ("oneOf", "anyOf", "allOf"):
        for branch in schema.get(keyword) or ():
            found.extend(secret_paths(branch, prefix))
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class Parameter:
    """One named input of a tool and where it travels in the HTTP request."""

    name: str
    location: Location
    schema: Mapping[str, Any]
    required: bool
    description: str = ""

    @property
    def type(self) -> str:
        """A short human-readable type, e.g. ``integer``, ``array[string]``, ``object``."""
        kind = self.schema.get("type")
        if isinstance(kind, list):
            kind = "|".join(str(k) for k in kind)
        if kind == "array":
            items = self.schema.get("items", {})
            return f"array[{items.get('type', 'any')}]"
        if kind is None and "oneOf" in self.schema:
            return "object"
        return str(kind or "any")

    @property
    def enum(self) -> tuple[Any, ...] | None:
        values = self.schema.get("enum") or self.schema.get("items", {}).get("enum")
        return tuple(values) if values else None


@dataclass(frozen=True, eq=False)
class Tool:
    """One Cal.com API v2 operation exposed under its catalog name."""

    name: str
    operation_id: str
    method: str
    path: str
    summary: str
    tag: str
    parameters: tuple[Parameter, ...]
    success_status: int
    response_schema: Mapping[str, Any] | None = field(default=None, repr=False)
    #: An internal operation: not one of the 37 tools (see the module docstring).
    internal: bool = False

    @cached_property
    def by_name(self) -> Mapping[str, Parameter]:
        return MappingProxyType({p.name: p for p in self.parameters})

    def parameters_in(self, location: Location) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.location == location)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters if p.required)

    @property
    def read_only(self) -> bool:
        return self.method == "GET"

    @property
    def destructive(self) -> bool:
        return self.method == "DELETE"

    @property
    def idempotent(self) -> bool:
        """True where repeating the same call leaves the same state (everything but POST)."""
        return self.method != "POST"

    @property
    def paginated(self) -> bool:
        names = self.by_name
        return self.read_only and "take" in names and "skip" in names

    @cached_property
    def secret_outputs(self) -> tuple[FieldPath, ...]:
        """Where the answer's ``data`` carries credentials (an API key, a webhook secret)."""
        envelope = self.response_schema or {}
        return secret_paths((envelope.get("properties") or {}).get("data"))

    @cached_property
    def secret_inputs(self) -> tuple[FieldPath, ...]:
        """Where the parameters carry credentials (a webhook secret, a private key)."""
        return secret_paths(self.input_schema)

    @cached_property
    def input_schema(self) -> Mapping[str, Any]:
        """All parameters as one JSON Schema object (what validation and MCP use)."""
        properties: dict[str, Any] = {}
        for parameter in self.parameters:
            schema = dict(parameter.schema)
            if parameter.description and "description" not in schema:
                schema["description"] = parameter.description
            properties[parameter.name] = schema
        return MappingProxyType(
            {
                "type": "object",
                "properties": properties,
                "required": list(self.required),
                "additionalProperties": False,
            }
        )


def _parameter_description(raw: Mapping[str, Any]) -> str:
    return str(raw.get("description") or raw.get("schema", {}).get("description") or "")


def _build_tool(method: str, path: str, operation: dict[str, Any], document: Any) -> Tool:
    parameters: list[Parameter] = []
    for raw in operation.get("parameters", []):
        if raw["in"] not in ("path", "query"):
            continue  # auth headers are the client's business, not a tool parameter
        parameters.append(
            Parameter(
                name=raw["name"],
                location=raw["in"],
                schema=MappingProxyType(to_json_schema(raw.get("schema", {}), document)),
                required=bool(raw.get("required")) or raw["in"] == "path",
                description=_parameter_description(raw),
            )
        )
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    if body:
        body_schema = to_json_schema(body["schema"], document)
        required = set(body_schema.get("required", []))
        for name, schema in body_schema.get("properties", {}).items():
            parameters.append(
                Parameter(
                    name=name,
                    location="body",
                    schema=MappingProxyType(schema),
                    required=name in required,
                    description=str(schema.get("description", "")),
                )
            )
    # Path parameters first in template order, then required, then the rest: a stable,
    # readable order for `tools describe` and MCP schemas.
    template_order = {name: i for i, name in enumerate(re.findall(r"{(\w+)}", path))}
    parameters.sort(
        key=lambda p: (
            p.location != "path",
            template_order.get(p.name, 0),
            not p.required,
        )
    )
    success = sorted(code for code in operation["responses"] if code.startswith("2"))[0]
    response = operation["responses"][success].get("content", {}).get("application/json", {})
    return Tool(
        name=tool_name(operation["operationId"]),
        operation_id=operation["operationId"],
        method=method.upper(),
        path=path,
        summary=str(operation.get("summary", "")),
        tag=str((operation.get("tags") or [""])[0]),
        parameters=tuple(parameters),
        success_status=int(success),
        response_schema=to_json_schema(response["schema"], document) if response else None,
        internal=bool(operation.get(INTERNAL_MARK)),
    )


def _build_registry() -> Mapping[str, Tool]:
    document = load_document()
    tools = [
        _build_tool(method, path, operation, document)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    return MappingProxyType({tool.name: tool for tool in sorted(tools, key=lambda t: t.name)})


#: Marks an operation of the vendored document as internal (``scripts/trim_openapi.py``).
INTERNAL_MARK = "x-calhooks-internal"
#: Every operation, tools and internal ones, by name.
OPERATIONS: Mapping[str, Tool] = _build_registry()
#: Every tool by catalog name, sorted by name: the 37 tools.
TOOLS: Mapping[str, Tool] = MappingProxyType(
    {name: tool for name, tool in OPERATIONS.items() if not tool.internal}
)
#: The internal read-only operations by name.
INTERNAL: Mapping[str, Tool] = MappingProxyType(
    {name: tool for name, tool in OPERATIONS.items() if tool.internal}
)
#: The organization's bookings (internal; the sandbox's bookings, reconciliation).
ORG_BOOKINGS = "cal_organizations_bookings_controller_get_all_org_team_bookings"


def get_tool(name: str) -> Tool:
    """The tool called ``name``; ``UnknownToolError`` (with close matches) otherwise."""
    try:
        return TOOLS[name]
    except KeyError:
        suggestions = difflib.get_close_matches(name, TOOLS, n=3, cutoff=0.6)
        raise UnknownToolError(name, suggestions) from None


def get_operation(name: str) -> Tool:
    """The tool or internal operation called ``name``; ``UnknownToolError`` otherwise."""
    operation = OPERATIONS.get(name)
    if operation is None:
        return get_tool(name)
    return operation
