"""Tenants: the groups connections belong to (an MCP token, a rule, a team owns a tenant).

A tenant name is letters, digits, ``_.-`` (at most 64); ``default`` is the tenant of
everything configured without one.
"""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"

_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TenantNameError(ValueError):
    """A tenant name that cannot be used."""


def check_tenant_name(name: str) -> str:
    """``name`` if it is a valid tenant name (letters, digits, ``_.-``, at most 64)."""
    if not _TENANT_NAME.fullmatch(name):
        raise TenantNameError(
            f"invalid tenant name {name!r}: use letters, digits, '_', '.', '-' (at most 64)"
        )
    return name
