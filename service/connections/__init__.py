"""Connections: the Cal.com organizations calhooks works for, each with its credentials.

A connection (``store.Connection``) is one Cal.com account and organization, kept
encrypted in Redis and named by an opaque PCID; it belongs to a tenant (``tenants``).
The MCP server picks one per tool call; the intake, subscriptions and workers use it as
the unit of the whole pipeline.
"""

from calhooks.service.connections.store import (
    Connection,
    ConnectionInfo,
    ConnectionStore,
    ConnectionStoreError,
    secret_box,
)
from calhooks.service.connections.tenants import DEFAULT_TENANT, TenantNameError, check_tenant_name

__all__ = [
    "DEFAULT_TENANT",
    "Connection",
    "ConnectionInfo",
    "ConnectionStore",
    "ConnectionStoreError",
    "TenantNameError",
    "check_tenant_name",
    "secret_box",
]
