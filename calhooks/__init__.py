"""calhooks: webhook intake, rules and the 37 organization tools for Cal.com organizations.

The public API is the Cal.com client and its registry::

    from calhooks import CalcomClient, CalcomError, Credentials

    async with CalcomClient(credentials=Credentials(api_key=key), org_id=org) as client:
        users = await client.call("cal_organizations_users_controller_get_organization_users")

The rest lives in two sub-packages, which the repository keeps at its top level
(``service/`` and ``workers/``; ``calhooks/service`` and ``calhooks/workers`` link to them and
the wheel installs them here):

* ``calhooks.service`` - the web process (intake, subscriptions, MCP), the Cal.com client
  (``calhooks.service.calcom``), the sandbox Cal.com, the CLI and the shared plumbing
  (``calhooks.service.core``);
* ``calhooks.workers`` - the arq workers and the rules engine (``calhooks.workers.rules``).

Names are imported on first use, so ``import calhooks`` costs nothing and changes nothing in
the importing process (calhooks' own processes trim libraries' extras at their entry point,
``calhooks.service.cli.main``; see ``calhooks.service.core.lean``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calhooks.service.calcom import (
        TOOLS,
        CalcomClient,
        CalcomError,
        CalcomResponse,
        CalcomTransportError,
        Credentials,
        Parameter,
        ParameterProblem,
        Tool,
        ToolError,
        ToolValidationError,
        UnknownToolError,
        get_tool,
    )

__version__ = "0.1.0"

__all__ = [
    "TOOLS",
    "CalcomClient",
    "CalcomError",
    "CalcomResponse",
    "CalcomTransportError",
    "Credentials",
    "Parameter",
    "ParameterProblem",
    "Tool",
    "ToolError",
    "ToolValidationError",
    "UnknownToolError",
    "__version__",
    "get_tool",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("calhooks.service.calcom"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
