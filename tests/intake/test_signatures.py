"""Signature checks: HMAC-SHA256 hex of the raw body, against every valid secret."""

from __future__ import annotations

import subprocess

import pytest

from calhooks.service.calcom.webhooks import NO_SECRET, sign
from calhooks.service.intake.signatures import Verdict, verify
from tests.intake.conftest import OLD_SECRET, SECRET, signature

BODY = b'{"triggerEvent":"BOOKING_CREATED","createdAt":"2025-10-10T09:12:44.301Z","payload":{}}'
KEYS = (SECRET.encode(), OLD_SECRET.encode())


def test_signature_as_openssl_computes_it_is_valid() -> None:
    """A digest made by openssl (not Python) over the same bytes verifies."""
    output = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-hex"],
        input=BODY, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    digest = output.strip().rsplit(" ", 1)[-1]
    assert digest == signature(BODY) == sign(BODY, SECRET.encode())
    assert verify(BODY, digest, KEYS) is Verdict.VALID


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_every_configured_secret_is_tried(secret: str) -> None:
    """During a rotation a body signed with either secret is valid."""
    assert verify(BODY, signature(BODY, secret), KEYS) is Verdict.VALID


def test_header_whitespace_and_uppercase_hex_are_tolerated() -> None:
    """Surrounding spaces and upper-case hex digits still compare equal."""
    assert verify(BODY, f"  {signature(BODY).upper()} ", KEYS) is Verdict.VALID


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (None, Verdict.MISSING),
        ("", Verdict.MISSING),
        ("   ", Verdict.MISSING),
        ("sha256=" + "0" * 64, Verdict.MALFORMED),
        ("abc", Verdict.MALFORMED),
        ("z" * 64, Verdict.MALFORMED),
        ("0" * 64, Verdict.MISMATCH),
        (NO_SECRET, Verdict.UNSIGNED),
    ],
)
def test_bad_headers_are_refused_with_their_reason(header: str | None, verdict: Verdict) -> None:
    """Missing, malformed, wrong and unsigned headers each get their own verdict."""
    result = verify(BODY, header, KEYS)
    assert result is verdict
    assert not result.accepted
    assert SECRET not in result.reason


def test_a_changed_body_no_longer_matches() -> None:
    """One byte more (even whitespace) breaks the signature: verification is on raw bytes."""
    assert verify(BODY + b" ", signature(BODY), KEYS) is Verdict.MISMATCH


def test_unsigned_deliveries_only_when_allowed() -> None:
    """``no-secret-provided`` passes only with allow_unsigned, and proves nothing otherwise."""
    assert verify(BODY, NO_SECRET, KEYS, allow_unsigned=True) is Verdict.UNSIGNED_ALLOWED
    assert verify(BODY, NO_SECRET, KEYS, allow_unsigned=True).accepted
    assert verify(BODY, NO_SECRET, KEYS) is Verdict.UNSIGNED


def test_no_configured_secret_refuses_signed_bodies() -> None:
    """With no secret configured a well-formed signature cannot be checked, so it is refused."""
    assert verify(BODY, signature(BODY), ()) is Verdict.NO_SECRETS
