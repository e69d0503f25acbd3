"""Bearer tokens: parsing the settings, and which tenant a request's header stands for."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from calhooks.service.core.settings import Settings
from calhooks.service.mcp.tenants import TokenConfigError, TokenTable

A = "a-token-of-tenant-default-0001"
B = "b-token-of-tenant-blue-0000002"


def table(**options: object) -> TokenTable:
    return TokenTable.from_settings(Settings(_env_file=None, **options))  # type: ignore[arg-type]


def test_single_token_is_tenant_default_and_pairs_add_tenants() -> None:
    """CALHOOKS_MCP_TOKEN is ``default``; CALHOOKS_MCP_TOKENS adds ``tenant:token`` pairs."""
    tokens = table(mcp_token=A, mcp_tokens=f"blue:{B}, green:{B[::-1]}")
    assert dict(tokens.tenants_by_token) == {A: "default", B: "blue", B[::-1]: "green"}
    assert tokens.configured
    assert not table().configured


@pytest.mark.parametrize(
    ("header", "tenant"),
    [
        (f"Bearer {A}", "default"),
        (f"bearer {B}", "blue"),
        (f"Bearer  {A} ", "default"),
        (f"Bearer {A}x", None),
        (f"Bearer {A[:-1]}", None),
        (f"Basic {A}", None),
        (A, None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_tenant_for_header(header: str | None, tenant: str | None) -> None:
    """Only an exact token after the Bearer scheme names a tenant."""
    assert table(mcp_token=A, mcp_tokens=f"blue:{B}").tenant_for(header) == tenant


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mcp_token": "short"}, "at least 16"),
        ({"mcp_tokens": f"blue {B}"}, "tenant:token"),
        ({"mcp_tokens": f"bad tenant:{B}"}, "invalid tenant name"),
        ({"mcp_tokens": f"blue:{B},green:{B}"}, "two tenants"),
        ({"mcp_token": A, "mcp_tokens": f"blue:{A}"}, "two tenants"),
        ({"mcp_tokens": "blue:with space 0123456789abc"}, "spaces"),
    ],
)
def test_bad_token_settings_are_refused(options: dict[str, str], message: str) -> None:
    """Misconfigured tokens stop the server with a message naming the problem."""
    with pytest.raises(TokenConfigError, match=message):
        table(**options)


def test_tokens_are_secret_in_settings() -> None:
    """The settings keep tokens as SecretStr, so a repr never shows them."""
    settings = Settings(_env_file=None, mcp_token=A, mcp_tokens=f"blue:{B}")
    assert isinstance(settings.mcp_token, SecretStr)
    assert A not in repr(settings)
    assert B not in repr(settings)
