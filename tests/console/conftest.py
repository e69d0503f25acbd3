"""Fixtures of the console's tests: settings with two console users, the web app in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from calhooks.service.app import create_app
from calhooks.service.console.passwords import hash_password
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.settings import Settings

OPERATOR = ("olga", "operator-password-1")
READER = ("rita", "reader-password-1")
RULES = Path(__file__).resolve().parents[2] / "examples" / "rules.yaml"
#: Hashed once per session (scrypt is deliberately slow).
_USERS: list[str] = []


def console_users() -> str:
    if not _USERS:
        _USERS.append(
            f"{OPERATOR[0]}:operator:{hash_password(OPERATOR[1])},"
            f"{READER[0]}:read-only:{hash_password(READER[1])}"
        )
    return _USERS[0]


def console_settings(tmp_path: Path, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "webhook_secrets": "whsec-console-tests",
        "data_dir": tmp_path / "data",
        "spool_dir": tmp_path / "spool",
        "console_users": console_users(),
        "rules_file": RULES,
        "api_url": "http://127.0.0.1:9",
        "api_retries": 0,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
def sync_redis(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def client(
    tmp_path: Path, redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> Iterator[TestClient]:
    app = create_app(console_settings(tmp_path, redis_server.url), redis_url=redis_server.url)
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def sign_in(client: TestClient, user: tuple[str, str]) -> None:
    page = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"name": user[0], "password": user[1], "csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
