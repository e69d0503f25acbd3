"""SecretBox: round trip, key rotation, and a clear error for a wrong key."""

from __future__ import annotations

import pytest

from calhooks.service.core.secretbox import SecretBox, SecretBoxError, generate_key


def test_round_trip_and_ciphertext_hides_plaintext() -> None:
    box = SecretBox(generate_key())
    token = box.encrypt("whsec_abc")
    assert "whsec_abc" not in token
    assert box.decrypt(token) == "whsec_abc"


def test_rotation_keeps_old_values_readable() -> None:
    old, new = generate_key(), generate_key()
    token = SecretBox(old).encrypt("s1")
    assert SecretBox(f"{new},{old}").decrypt(token) == "s1"


def test_wrong_key_and_bad_key() -> None:
    token = SecretBox(generate_key()).encrypt("s1")
    with pytest.raises(SecretBoxError, match="cannot decrypt"):
        SecretBox(generate_key()).decrypt(token)
    with pytest.raises(SecretBoxError, match="not a valid Fernet key"):
        SecretBox("nope")
