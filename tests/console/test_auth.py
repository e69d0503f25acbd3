"""The console's gate, in-process: sign-in, sessions, CSRF, roles, rate limit, off by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from calhooks.service.app import create_app
from calhooks.service.console.auth import COOKIE, MAX_FAILURES
from calhooks.service.console.passwords import (
    UsersError,
    hash_password,
    parse_users,
    verify_password,
)
from calhooks.service.core.embedded_redis import EmbeddedRedis
from tests.console.conftest import OPERATOR, READER, console_settings, csrf_of, sign_in

PAGES = [
    "/console/",
    "/console/events",
    "/console/events/rows",
    "/console/events/0123456789abcdef",
    "/console/rules",
    "/console/dead-letters",
    "/console/dead-letters/0123456789abcdef",
    "/console/dead-letters/drop?all=1",
    "/console/webhooks",
    "/console/connections",
    "/console/reconciliation",
]


def test_passwords_hash_and_verify() -> None:
    encoded = hash_password("s3cret")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret!", encoded)
    assert not verify_password("s3cret", "scrypt$bad")
    assert "s3cret" not in encoded


def test_users_setting_is_checked() -> None:
    users = parse_users(f"ann:operator:{hash_password('x')}, bob:read-only:{hash_password('y')}")
    assert users["ann"].operator
    assert not users["bob"].operator
    with pytest.raises(UsersError, match="role must be one of"):
        parse_users(f"ann:admin:{hash_password('x')}")
    with pytest.raises(UsersError, match="not a scrypt hash"):
        parse_users("ann:operator:plaintext")
    with pytest.raises(UsersError, match="expected name:role:hash"):
        parse_users("ann")


def test_console_is_off_without_users(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    settings = console_settings(tmp_path, redis_server.url, console_users=None)
    with TestClient(create_app(settings, redis_url=redis_server.url)) as client:
        assert client.get("/console/", follow_redirects=False).status_code == 404
        assert client.get("/console/sign-in", follow_redirects=False).status_code == 404


@pytest.mark.parametrize("page", PAGES)
def test_signed_out_every_page_redirects_to_sign_in(client: TestClient, page: str) -> None:
    answer = client.get(page, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=")


def test_signed_out_posts_redirect_and_change_nothing(
    client: TestClient, sync_redis: redis.Redis
) -> None:
    answer = client.post("/console/dead-letters/replay", data={"all": "1"}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")


def test_sign_in_sets_a_strict_http_only_cookie(client: TestClient) -> None:
    page = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"name": OPERATOR[0], "password": OPERATOR[1], "csrf": csrf_of(page.text),
              "next": "/console/events"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/events"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=")
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=strict" in lowered
    assert "path=/console" in lowered
    assert "secure" not in lowered  # plain http here; https sets it (next test)
    assert client.get("/console/events").status_code == 200


def test_cookie_is_secure_behind_https(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    settings = console_settings(tmp_path, redis_server.url)
    app = create_app(settings, redis_url=redis_server.url)
    with TestClient(app, base_url="https://console.example") as client:
        page = client.get("/console/sign-in")
        assert "secure" in page.headers["set-cookie"].lower()


def test_next_never_leaves_the_console(client: TestClient) -> None:
    page = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"name": OPERATOR[0], "password": OPERATOR[1], "csrf": csrf_of(page.text),
              "next": "https://evil.example/console/"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.headers["location"] == "/console/"


def test_wrong_password_is_refused(client: TestClient) -> None:
    page = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"name": OPERATOR[0], "password": "nope", "csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 401
    assert "Wrong name or password" in answer.text
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_sign_in_without_csrf_is_refused(client: TestClient) -> None:
    client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in", data={"name": OPERATOR[0], "password": OPERATOR[1]},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 403
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_sign_in_attempts_are_rate_limited(client: TestClient) -> None:
    csrf = csrf_of(client.get("/console/sign-in").text)
    for _ in range(MAX_FAILURES):
        answer = client.post(
            "/console/sign-in", data={"name": READER[0], "password": "guess", "csrf": csrf}
        )
        assert answer.status_code == 401
    locked = client.post(
        "/console/sign-in", data={"name": READER[0], "password": READER[1], "csrf": csrf},
        follow_redirects=False,
    )  # fmt: skip
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.text


def test_post_without_csrf_is_refused(client: TestClient, sync_redis: redis.Redis) -> None:
    sign_in(client, OPERATOR)
    answer = client.post("/console/dead-letters/replay", data={"all": "1"})
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    wrong = client.post("/console/dead-letters/replay", data={"all": "1", "csrf": "forged"})
    assert wrong.status_code == 403


def test_post_with_csrf_header_is_accepted(client: TestClient) -> None:
    sign_in(client, OPERATOR)
    csrf = csrf_of(client.get("/console/dead-letters").text)
    answer = client.post(
        "/console/dead-letters/replay", headers={"X-CSRF-Token": csrf}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert "Nothing+to+replay" in answer.headers["location"]


def test_read_only_role_cannot_replay_or_drop(client: TestClient) -> None:
    sign_in(client, READER)
    page = client.get("/console/dead-letters")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    for path, data in (
        ("/console/dead-letters/replay", {"all": "1", "csrf": csrf}),
        ("/console/dead-letters/drop", {"all": "1", "confirm": "yes", "csrf": csrf}),
        ("/console/webhooks/test", {"csrf": csrf}),
        ("/console/reconciliation/run", {"csrf": csrf}),
    ):
        answer = client.post(path, data=data)
        assert answer.status_code == 403, path
        assert "read-only" in answer.text


def test_sign_out_ends_the_session(client: TestClient) -> None:
    sign_in(client, OPERATOR)
    csrf = csrf_of(client.get("/console/").text)
    answer = client.post("/console/sign-out", data={"csrf": csrf}, follow_redirects=False)
    assert answer.status_code == 303
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_tampered_cookie_is_not_a_session(client: TestClient) -> None:
    sign_in(client, OPERATOR)
    value = client.cookies.get(COOKIE)
    assert value
    client.cookies.clear()
    client.cookies.set(
        COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"), path="/console"
    )
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_changed_password_signs_the_user_out(
    tmp_path: Path, redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    first = create_app(console_settings(tmp_path, redis_server.url), redis_url=redis_server.url)
    with TestClient(first) as client:
        sign_in(client, OPERATOR)
        cookie = client.cookies.get(COOKIE)
    users = f"{OPERATOR[0]}:operator:{hash_password('another-password')}"
    second = create_app(
        console_settings(tmp_path, redis_server.url, console_users=users),
        redis_url=redis_server.url,
    )
    with TestClient(second) as client:
        client.cookies.set(COOKIE, cookie or "", path="/console")
        assert client.get("/console/", follow_redirects=False).status_code == 303


def test_console_root_without_slash_redirects(client: TestClient) -> None:
    answer = client.get("/console", follow_redirects=False)
    assert answer.status_code in (307, 308)
    assert answer.headers["location"].endswith("/console/")
