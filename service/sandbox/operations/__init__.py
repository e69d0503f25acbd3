"""The handlers of the 37 tools and the internal operations, one module per resource group,
bound to operations by name.

Importing this package registers every handler in ``HANDLERS``; ``missing_handlers()``
names any registry tool left without one (the app refuses to start then).
"""

from __future__ import annotations

from calhooks.service.calcom.tools import OPERATIONS
from calhooks.service.sandbox.operations import (  # noqa: F401 - imported to register handlers
    attributes,
    bookings,
    delegation,
    managed_orgs,
    memberships,
    ooo,
    users,
    webhooks,
)
from calhooks.service.sandbox.operations.base import (
    HANDLERS,
    Call,
    Events,
    Handler,
    Result,
    operation,
    page,
)


def missing_handlers() -> list[str]:
    """Registry operations (tools and internal ones) without a handler (empty when the
    sandbox serves all of them)."""
    return [name for name in OPERATIONS if name not in HANDLERS]


__all__ = [
    "HANDLERS",
    "Call",
    "Events",
    "Handler",
    "Result",
    "missing_handlers",
    "operation",
    "page",
]
