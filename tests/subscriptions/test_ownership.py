"""Tests of how calhooks marks and recognises its own webhooks."""

from __future__ import annotations

import pytest

from calhooks.service.subscriptions.errors import OwnershipError
from calhooks.service.subscriptions.ownership import is_own, owner_of, same_endpoint, subscriber_url


@pytest.mark.parametrize(
    ("public", "path", "expected"),
    [
        ("https://hooks.example.com", "/webhooks/cal", "https://hooks.example.com/webhooks/cal"),
        ("https://hooks.example.com/", "/webhooks/cal", "https://hooks.example.com/webhooks/cal"),
        (
            "https://example.com/calhooks/",
            "webhooks/cal",
            "https://example.com/calhooks/webhooks/cal",
        ),
        ("http://127.0.0.1:8080", "/webhooks/cal/", "http://127.0.0.1:8080/webhooks/cal"),
    ],
)
def test_subscriber_url_joins_base_and_path_and_marks_the_deployment(
    public: str, path: str, expected: str
) -> None:
    """The subscriber URL is the public base URL plus the intake path, marked with the name."""
    assert subscriber_url(public, path, "prod") == f"{expected}?calhooks=prod"


@pytest.mark.parametrize(
    "public",
    ["hooks.example.com", "ftp://hooks.example.com", "https://", "https://h.example?x=1", ""],
)
def test_subscriber_url_refuses_unusable_public_urls(public: str) -> None:
    """A public URL that is not plain http(s) with a host is a clear error."""
    with pytest.raises(OwnershipError, match="public URL"):
        subscriber_url(public, "/webhooks/cal", "prod")


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 64, "é"])
def test_subscriber_url_refuses_bad_deployment_names(name: str) -> None:
    """Deployment names are short and URL-safe, so the mark reads back exactly."""
    with pytest.raises(OwnershipError, match="deployment name"):
        subscriber_url("https://hooks.example.com", "/webhooks/cal", name)


def test_ownership_follows_the_mark_not_the_host() -> None:
    """A webhook is own by its mark alone: an old host is still own, an unmarked URL is not."""
    mine = subscriber_url("https://new.example.com", "/webhooks/cal", "prod")
    old = subscriber_url("https://old.example.com", "/hooks", "prod")
    assert is_own(mine, "prod")
    assert is_own(old, "prod")
    assert not is_own(mine, "staging")
    assert not is_own("https://new.example.com/webhooks/cal", "prod")
    assert not is_own("https://zapier.example/hook?calhooks=prod&calhooks=staging", "prod")
    assert owner_of("https://x.example/?a=1&calhooks=staging") == "staging"
    assert owner_of("not a url at all") is None


def test_same_endpoint_ignores_the_query_and_case_of_the_host() -> None:
    """Two URLs reach the same endpoint when scheme, host, port and path agree."""
    assert same_endpoint(
        "https://H.example.com/webhooks/cal?calhooks=a", "https://h.example.com/webhooks/cal/"
    )
    assert not same_endpoint(
        "https://h.example.com/webhooks/cal", "http://h.example.com/webhooks/cal"
    )
    assert not same_endpoint("https://h.example.com/webhooks/cal", "https://h.example.com/other")
