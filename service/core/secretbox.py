"""Encryption at rest for secrets calhooks keeps in Redis (webhook secrets, MCP connections).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) keyed by
``CALHOOKS_ENCRYPTION_KEY``. Several keys may be given comma-separated, newest first:
new values are encrypted with the first, and any of them decrypts, so the key can be
rotated without losing what is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

# ``cryptography`` (~7 MB) is imported when a key is first used, not with this module: the
# settings import it, and a process without CALHOOKS_ENCRYPTION_KEY never encrypts.


class SecretBoxError(Exception):
    """A value could not be decrypted (wrong or missing key) or no key is configured."""


def generate_key() -> str:
    """A fresh key for ``CALHOOKS_ENCRYPTION_KEY``."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class SecretBox:
    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise SecretBoxError("CALHOOKS_ENCRYPTION_KEY is empty")
        from cryptography.fernet import Fernet, MultiFernet

        self._fernet: MultiFernet
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])
        except ValueError as exc:
            raise SecretBoxError(
                "CALHOOKS_ENCRYPTION_KEY is not a valid Fernet key (make one: calhooks keygen)"
            ) from exc

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str | bytes) -> str:
        raw = token.encode() if isinstance(token, str) else token
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(raw).decode()
        except InvalidToken as exc:
            raise SecretBoxError("cannot decrypt: wrong CALHOOKS_ENCRYPTION_KEY?") from exc
