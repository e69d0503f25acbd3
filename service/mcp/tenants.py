"""Who is calling the MCP endpoint: bearer tokens mapped to tenants.

``CALHOOKS_MCP_TOKEN`` is the token of the tenant ``default``; ``CALHOOKS_MCP_TOKENS`` adds
``tenant:token`` pairs (comma-separated). A connection belongs to one tenant, and a caller
can only use the connections of the tenant its token names: another tenant's PCID is just
an unknown PCID.

Tokens are compared in constant time, and every configured token is compared on every
request, so timing reveals neither which token matched nor how many characters did.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from calhooks.service.connections.tenants import DEFAULT_TENANT, TenantNameError, check_tenant_name

if TYPE_CHECKING:
    from calhooks.service.core.settings import Settings

__all__ = [
    "DEFAULT_TENANT",
    "MIN_TOKEN_LENGTH",
    "TENANT_SCOPE_KEY",
    "TokenConfigError",
    "TokenTable",
]

MIN_TOKEN_LENGTH = 16
#: ASGI scope key under which the HTTP app hands the caller's tenant to the tool handlers.
TENANT_SCOPE_KEY = "calhooks.mcp.tenant"


class TokenConfigError(ValueError):
    """``CALHOOKS_MCP_TOKEN`` / ``CALHOOKS_MCP_TOKENS`` cannot be used as given."""


def _check_token(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenConfigError(
            f"{where}: tokens must be at least {MIN_TOKEN_LENGTH} characters "
            "(make one with `calhooks mcp token`)"
        )
    if any(ch.isspace() or ch == "," for ch in token):
        raise TokenConfigError(f"{where}: tokens cannot contain spaces or commas")
    return token


@dataclass(frozen=True)
class TokenTable:
    """The configured bearer tokens and the tenant each one stands for."""

    tenants_by_token: Mapping[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable:
        table: dict[str, str] = {}
        if settings.mcp_token:
            token = _check_token(settings.mcp_token.get_secret_value(), "CALHOOKS_MCP_TOKEN")
            table[token] = DEFAULT_TENANT
        if settings.mcp_tokens:
            for item in settings.mcp_tokens.get_secret_value().split(","):
                if not item.strip():
                    continue
                tenant, sep, token = item.strip().partition(":")
                if not sep:
                    raise TokenConfigError("CALHOOKS_MCP_TOKENS: expected `tenant:token` pairs")
                try:
                    check_tenant_name(tenant)
                except TenantNameError as error:
                    raise TokenConfigError(str(error)) from None
                _check_token(token, "CALHOOKS_MCP_TOKENS")
                if table.get(token, tenant) != tenant:
                    raise TokenConfigError("CALHOOKS_MCP_TOKENS: one token given to two tenants")
                table[token] = tenant
        return cls(MappingProxyType(table))

    @property
    def configured(self) -> bool:
        return bool(self.tenants_by_token)

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant of an ``Authorization: Bearer <token>`` header value, or ``None``."""
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            presented = ""
        offered = presented.strip().encode()
        found: str | None = None
        for token, tenant in self.tenants_by_token.items():
            if hmac.compare_digest(offered, token.encode()) and presented:
                found = tenant
        return found
