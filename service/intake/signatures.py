"""Checking ``X-Cal-Signature-256``: HMAC-SHA256 of the raw body, against every valid secret.

Cal.com signs the exact bytes it sends with the webhook's secret (UTF-8) and sends the
lowercase hex digest, with no prefix and no timestamp; a webhook without a secret sends the
literal ``no-secret-provided``, which proves nothing (FACTS.md §5).

During a rotation the previous secret stays valid until its expiry, so the digest is
compared with every currently valid secret. Each comparison is constant time and all of them
run whatever the outcome, so timing tells an attacker neither the digest nor which secret
matched.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Sequence

from calhooks.service.calcom.webhooks import NO_SECRET

_DIGEST_HEX_LENGTH = 64


class Verdict(enum.Enum):
    """What a signature check found; only ``VALID`` and ``UNSIGNED_ALLOWED`` let a body in."""

    VALID = "valid"
    UNSIGNED_ALLOWED = "unsigned-allowed"
    MISSING = "missing"
    MALFORMED = "malformed"
    MISMATCH = "mismatch"
    UNSIGNED = "unsigned"
    NO_SECRETS = "no-secrets"

    @property
    def accepted(self) -> bool:
        return self in (Verdict.VALID, Verdict.UNSIGNED_ALLOWED)

    @property
    def reason(self) -> str:
        """A short explanation for the sender (safe: it names no secret)."""
        return _REASONS[self]


_REASONS = {
    Verdict.VALID: "signature valid",
    Verdict.UNSIGNED_ALLOWED: "unsigned delivery allowed by configuration",
    Verdict.MISSING: "missing X-Cal-Signature-256 header",
    Verdict.MALFORMED: "X-Cal-Signature-256 is not a hex SHA-256 digest",
    Verdict.MISMATCH: "signature does not match any configured secret",
    Verdict.UNSIGNED: "webhook has no secret (no-secret-provided); unsigned deliveries are refused",
    Verdict.NO_SECRETS: "no webhook signing secret is configured on this receiver",
}


def header_verdict(header: str | None, *, allow_unsigned: bool = False) -> Verdict | None:
    """The verdict when the header alone decides it (missing, malformed, unsigned), else ``None``.

    The intake asks this before reading the body: a delivery refused whatever its bytes costs
    no memory and no read time.
    """
    if header is None or not header.strip():
        return Verdict.MISSING
    value = header.strip()
    if value == NO_SECRET:
        return Verdict.UNSIGNED_ALLOWED if allow_unsigned else Verdict.UNSIGNED
    if len(value) != _DIGEST_HEX_LENGTH:
        return Verdict.MALFORMED
    try:
        bytes.fromhex(value)
    except ValueError:
        return Verdict.MALFORMED
    return None


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[bytes],
    *,
    allow_unsigned: bool = False,
) -> Verdict:
    """Check ``header`` (the raw header value, or ``None``) for ``body`` against ``secrets``."""
    decided = header_verdict(header, allow_unsigned=allow_unsigned)
    if decided is not None:
        return decided
    assert header is not None  # header_verdict decides a missing one
    presented = bytes.fromhex(header.strip())
    if not secrets:
        return Verdict.NO_SECRETS
    matched = False
    for secret in secrets:
        # `|=` rather than `or`: every secret is compared, whichever matches.
        matched |= hmac.compare_digest(hmac.digest(secret, body, hashlib.sha256), presented)
    return Verdict.VALID if matched else Verdict.MISMATCH
