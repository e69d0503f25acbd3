"""Vendor a trimmed copy of Cal.com's API v2 OpenAPI document.

Keeps only the operations behind calhooks' 37 organization tools, the internal read-only
operations in ``INTERNAL`` (marked ``x-calhooks-internal: true``: callable by the client,
never offered as tools) and the component schemas they reference (transitively).
Run it when the upstream document changes:

    python scripts/trim_openapi.py path/to/openapi-v2.json

It writes ``service/calcom/data/openapi-orgs.json``. Nothing reads the full document at
run time; defects in the published document are corrected by ``service/calcom/overlay.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CONTROLLERS = (
    "OrganizationsAttributesController_",
    "OrganizationsAttributesOptionsController_",
    "OrganizationsOrganizationsController_",
    "OrganizationsDelegationCredentialController_",
    "OrganizationsMembershipsController_",
    "OrganizationsUsersController_",
    "OrganizationsUsersOOOController_",
    "OrganizationsWebhooksController_",
)
# Operations of those controllers that the catalog does not expose as tools.
NOT_IN_CATALOG = {
    "OrganizationsAttributesOptionsController_getOrganizationAttributeAssignedOptions",
    "OrganizationsAttributesOptionsController_getOrganizationAttributeAssignedOptionsBySlug",
    "OrganizationsAttributesOptionsController_getOrganizationAttributeOptionsForUser",
}
# Read-only operations calhooks calls itself but does not offer as tools (MCP, `tools list`,
# rules): the organization's bookings, which the sandbox lists for reconciliation.
INTERNAL = {"OrganizationsBookingsController_getAllOrgTeamBookings"}
INTERNAL_MARK = "x-calhooks-internal"
METHODS = ("get", "post", "put", "patch", "delete")
OUTPUT = (
    Path(__file__).resolve().parent.parent / "service" / "calcom" / "data" / "openapi-orgs.json"
)


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def trim(document: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if not operation:
                continue
            operation_id = operation.get("operationId", "")
            if operation_id in INTERNAL:
                paths.setdefault(path, {})[method] = {**operation, INTERNAL_MARK: True}
            elif operation_id.startswith(CONTROLLERS) and operation_id not in NOT_IN_CATALOG:
                paths.setdefault(path, {})[method] = operation
    schemas = document["components"]["schemas"]
    wanted: set[str] = set()
    pending = _refs(paths)
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        wanted.add(name)
        pending |= _refs(schemas[name]) - wanted
    return {
        "openapi": document["openapi"],
        "info": {
            **document["info"],
            "x-calhooks-note": (
                "Trimmed by scripts/trim_openapi.py to the 37 organization tools and "
                "calhooks' internal read-only operations."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": {name: schemas[name] for name in sorted(wanted)}},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    document = json.loads(Path(argv[1]).read_text())
    trimmed = trim(document)
    OUTPUT.write_text(json.dumps(trimmed, indent=1, sort_keys=False) + "\n")
    operations = sum(len(item) for item in trimmed["paths"].values())
    print(
        f"wrote {OUTPUT} ({operations} operations, {len(trimmed['components']['schemas'])} schemas)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
