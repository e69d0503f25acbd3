"""Sandbox Cal.com: a stateful, spec-validating fake of the 37 organization operations that
also delivers signed webhooks (``calhooks sandbox``; ``create_app()`` for tests).

Seeded credentials (see ``seed``): ``SANDBOX_API_KEY`` for Acme (``SANDBOX_ORG_ID`` 1, alice
the admin), ``SANDBOX_MEMBER_API_KEY`` (bob, a member), the platform client
``SANDBOX_CLIENT_ID``/``SANDBOX_CLIENT_SECRET``, and ``SECOND_API_KEY`` for Globex
(``SECOND_ORG_ID`` 2); numbered organizations (``create_app(organizations=N)``) each have
``organization_api_key(id)``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calhooks.service.calcom.webhooks import NO_SECRET, WEBHOOK_VERSION
    from calhooks.service.sandbox.app import create_app
    from calhooks.service.sandbox.deliveries import Delivery, signature
    from calhooks.service.sandbox.faults import FaultRule
    from calhooks.service.sandbox.payloads import SUPPORTED_TRIGGERS
    from calhooks.service.sandbox.ratelimit import RateLimit
    from calhooks.service.sandbox.requestlog import RequestRecord
    from calhooks.service.sandbox.sandbox import CALCOM_RATE_LIMIT, Sandbox
    from calhooks.service.sandbox.seed import (
        DEPARTMENT_ATTRIBUTE_ID,
        MANAGED_API_KEY,
        MANAGED_ORG_ID,
        SANDBOX_API_KEY,
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        SANDBOX_MEMBER_API_KEY,
        SANDBOX_ORG_ID,
        SECOND_API_KEY,
        SECOND_ORG_ID,
        option_id,
        organization_api_key,
        organization_key_id,
    )

__all__ = [
    "CALCOM_RATE_LIMIT",
    "DEPARTMENT_ATTRIBUTE_ID",
    "MANAGED_API_KEY",
    "MANAGED_ORG_ID",
    "NO_SECRET",
    "SANDBOX_API_KEY",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_MEMBER_API_KEY",
    "SANDBOX_ORG_ID",
    "SECOND_API_KEY",
    "SECOND_ORG_ID",
    "SUPPORTED_TRIGGERS",
    "WEBHOOK_VERSION",
    "Delivery",
    "FaultRule",
    "RateLimit",
    "RequestRecord",
    "Sandbox",
    "create_app",
    "option_id",
    "organization_api_key",
    "organization_key_id",
    "signature",
]

#: Where each name lives: the package loads a module on first use of one of its names, so
#: ``calhooks sandbox --help`` (which needs a few constants) does not build the whole app.
_WHERE = {
    "CALCOM_RATE_LIMIT": "calhooks.service.sandbox.sandbox",
    "DEPARTMENT_ATTRIBUTE_ID": "calhooks.service.sandbox.seed",
    "Delivery": "calhooks.service.sandbox.deliveries",
    "FaultRule": "calhooks.service.sandbox.faults",
    "MANAGED_API_KEY": "calhooks.service.sandbox.seed",
    "MANAGED_ORG_ID": "calhooks.service.sandbox.seed",
    "NO_SECRET": "calhooks.service.calcom.webhooks",
    "RateLimit": "calhooks.service.sandbox.ratelimit",
    "RequestRecord": "calhooks.service.sandbox.requestlog",
    "SANDBOX_API_KEY": "calhooks.service.sandbox.seed",
    "SANDBOX_CLIENT_ID": "calhooks.service.sandbox.seed",
    "SANDBOX_CLIENT_SECRET": "calhooks.service.sandbox.seed",
    "SANDBOX_MEMBER_API_KEY": "calhooks.service.sandbox.seed",
    "SANDBOX_ORG_ID": "calhooks.service.sandbox.seed",
    "SECOND_API_KEY": "calhooks.service.sandbox.seed",
    "SECOND_ORG_ID": "calhooks.service.sandbox.seed",
    "SUPPORTED_TRIGGERS": "calhooks.service.sandbox.payloads",
    "Sandbox": "calhooks.service.sandbox.sandbox",
    "WEBHOOK_VERSION": "calhooks.service.calcom.webhooks",
    "create_app": "calhooks.service.sandbox.app",
    "option_id": "calhooks.service.sandbox.seed",
    "organization_api_key": "calhooks.service.sandbox.seed",
    "organization_key_id": "calhooks.service.sandbox.seed",
    "signature": "calhooks.service.sandbox.deliveries",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
