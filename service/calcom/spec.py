"""The corrected OpenAPI document for the 37 tools, loaded once from package data.

``load_document()`` reads the vendored, trimmed document and applies the overlay;
``to_json_schema()`` turns one of its OpenAPI 3.0 schemas into a self-contained JSON
Schema (refs inlined, ``nullable`` expressed as a ``null`` type) that ``jsonschema`` and
MCP clients understand.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from calhooks.service.calcom.overlay import Document, apply_overlay

SPEC_RESOURCE = "data/openapi-orgs.json"

# OpenAPI-only keywords that mean nothing to a JSON Schema validator.
_DROP = frozenset({"example", "nullable", "xml", "externalDocs", "deprecated", "readOnly"})


@cache
def load_document() -> Document:
    """The vendored document with every overlay correction applied."""
    raw = (
        resources.files("calhooks.service.calcom")
        .joinpath(SPEC_RESOURCE)
        .read_text(encoding="utf-8")
    )
    return apply_overlay(json.loads(raw))


def to_json_schema(schema: Any, document: Document) -> Any:
    """Inline ``$ref``s and translate OpenAPI 3.0 ``nullable`` into JSON Schema."""
    if isinstance(schema, list):
        return [to_json_schema(item, document) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return to_json_schema(document["components"]["schemas"][name], document)
    converted = {
        key: to_json_schema(value, document) if key not in {"enum", "default"} else value
        for key, value in schema.items()
        if key not in _DROP
    }
    if schema.get("nullable") and "type" in converted:
        converted["type"] = [converted["type"], "null"]
    if isinstance(converted.get("properties"), dict):
        # Property names are data, not keywords: convert each property schema as a whole.
        converted["properties"] = {
            name: to_json_schema(value, document) for name, value in schema["properties"].items()
        }
    return converted
