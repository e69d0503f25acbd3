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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calhooks.service.core.settings import Settings

DEFAULT_TENANT = "default"
MIN_TOKEN_LENGTH = 16
#: ASGI scope key under which the HTTP app hands the caller's tenant to the tool handlers.
TENANT_SCOPE_KEY = "calhooks.mcp.tenant"

_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TokenConfigError(ValueError):
    """``CALHOOKS_MCP_TOKEN`` / ``CALHOOKS_MCP_TOKENS`` cannot be used as given."""


def check_tenant_name(name: str) -> str:
    """``name`` if it is a valid tenant name (letters, digits, ``_.-``, at most 64)."""
    if not _TENANT_NAME.fullmatch(name):
        raise TokenConfigError(
            f"invalid tenant name {name!r}: use letters, digits, '_', '.', '-' (at most 64)"
        )
    return name


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
                check_tenant_name(tenant)
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
