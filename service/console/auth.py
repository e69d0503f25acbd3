"""Console sign-in: signed session cookies, CSRF tokens, roles, and sign-in rate limits.

Every visitor gets a session cookie (``calhooks_console``, path ``/console``, HttpOnly,
SameSite=Strict, Secure when the request came over https) signed with a key kept in Redis
(``calhooks:console:session_key``, made once by whichever web replica starts first, so all
replicas accept each other's cookies). The session holds a CSRF token - every POST must send
it back as the ``csrf`` form field or the ``X-CSRF-Token`` header - and, once signed in, the
user's name and a fingerprint of their password hash: changing a user's password or role in
``CALHOOKS_CONSOLE_USERS`` signs them out.

Failed sign-ins are counted per client address and per user name in Redis; past
``MAX_FAILURES`` within ``FAILURE_WINDOW`` seconds, sign-in answers 429 until the window ends.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from calhooks.service.console.passwords import User, verify_password

COOKIE = "calhooks_console"
COOKIE_PATH = "/console"
SESSION_SECONDS = 12 * 3600
KEY_NAME = "calhooks:console:session_key"
FAILURES_PREFIX = "calhooks:console:signin_failures:"
MAX_FAILURES = 10
FAILURE_WINDOW = 300
#: Checked against when a name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


@dataclass
class Session:
    csrf: str
    user: User | None = None

    @property
    def signed_in(self) -> bool:
        return self.user is not None


def _fingerprint(user: User) -> str:
    return hashlib.sha256(f"{user.role}\n{user.password_hash}".encode()).hexdigest()[:16]


class Auth:
    """Reads and writes sessions; checks passwords, CSRF tokens and the sign-in rate limit."""

    def __init__(self, users: dict[str, User], redis: aioredis.Redis) -> None:
        self.users = users
        self.redis = redis
        self._serializer: URLSafeTimedSerializer | None = None

    async def start(self) -> None:
        """Load (or make) the shared signing key, once."""
        if self._serializer is not None:
            return
        await self.redis.set(KEY_NAME, secrets.token_urlsafe(32), nx=True)
        key = await self.redis.get(KEY_NAME)
        if key is None:
            raise RuntimeError("the console's session key vanished from Redis")
        self._serializer = URLSafeTimedSerializer(key, salt="calhooks-console")

    @property
    def serializer(self) -> URLSafeTimedSerializer:
        if self._serializer is None:
            raise RuntimeError("Auth.start() was not awaited")
        return self._serializer

    def load(self, request: Request) -> Session | None:
        """The request's valid session, or ``None`` (no cookie, bad signature, expired)."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self.serializer.loads(raw, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        session = Session(csrf=data["c"])
        user = self.users.get(str(data.get("u"))) if data.get("u") else None
        if user is not None and hmac.compare_digest(str(data.get("f", "")), _fingerprint(user)):
            session.user = user
        return session

    @staticmethod
    def new_session() -> Session:
        return Session(csrf=secrets.token_urlsafe(24))

    def save(self, request: Request, response: Response, session: Session) -> None:
        data: dict[str, str] = {"c": session.csrf}
        if session.user is not None:
            data["u"] = session.user.name
            data["f"] = _fingerprint(session.user)
        response.set_cookie(
            COOKIE,
            self.serializer.dumps(data),
            max_age=SESSION_SECONDS,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf, str(token))

    def check_password(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        return user if ok and user is not None else None

    def _failure_keys(self, client: str, name: str) -> list[str]:
        return [FAILURES_PREFIX + "addr:" + client, FAILURES_PREFIX + "name:" + name.lower()]

    async def locked_out(self, client: str, name: str) -> bool:
        counts = await self.redis.mget(self._failure_keys(client, name))
        return any(c is not None and int(c) >= MAX_FAILURES for c in counts)

    async def note_failure(self, client: str, name: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._failure_keys(client, name):
                pipe.set(key, 0, ex=FAILURE_WINDOW, nx=True)  # the window starts at the first
                pipe.incr(key)
            await pipe.execute()
