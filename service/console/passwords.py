"""Console credentials: the ``CALHOOKS_CONSOLE_USERS`` setting and its password hashes.

The setting holds ``name:role:hash`` entries separated by commas; ``role`` is ``operator``
(may replay and drop dead letters, send test deliveries) or ``read-only``. Hashes are scrypt
(``scrypt$<n>$<r>$<p>$<salt>$<digest>``, base64url), made by
``python -m calhooks.service.console.passwords`` (it reads the password from stdin or a
prompt, never from an argument). These are not MCP tokens: each has its own setting.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass
from typing import Literal, get_args

Role = Literal["operator", "read-only"]
ROLES: tuple[str, ...] = get_args(Role)
_N, _R, _P = 2**14, 8, 1


class UsersError(ValueError):
    """``CALHOOKS_CONSOLE_USERS`` cannot be read (the message says which entry and why)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def parse_users(value: str) -> dict[str, User]:
    """The users of a ``CALHOOKS_CONSOLE_USERS`` value, by name."""
    users: dict[str, User] = {}
    for number, entry in enumerate((e.strip() for e in value.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise UsersError(f"CALHOOKS_CONSOLE_USERS entry {number}: expected name:role:hash")
        name, role, password_hash = parts
        if role not in ROLES:
            raise UsersError(
                f"CALHOOKS_CONSOLE_USERS entry {number} ({name}): role must be one of "
                + ", ".join(ROLES)
            )
        if not password_hash.startswith("scrypt$") or password_hash.count("$") != 5:
            raise UsersError(
                f"CALHOOKS_CONSOLE_USERS entry {number} ({name}): not a scrypt hash (make one "
                "with `python -m calhooks.service.console.passwords`)"
            )
        users[name] = User(name, role, password_hash)  # type: ignore[arg-type]
    return users


def main() -> None:
    """Print the hash of a password read from stdin (piped) or typed at a prompt."""
    password = getpass.getpass("console password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    if not password:
        print("empty password", file=sys.stderr)
        raise SystemExit(2)
    print(hash_password(password))


if __name__ == "__main__":
    main()
