"""Webhook secrets: env list and JSON file with expiries, reloaded on change, combined."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from calhooks.service.core.settings import Settings
from calhooks.service.intake.secrets import (
    EnvSecrets,
    SecretProvider,
    SecretsFile,
    WebhookSecret,
    parse_secrets_file,
    parse_secrets_list,
)

PAST = "2020-01-01T00:00:00Z"
FUTURE = "2999-01-01T00:00:00+02:00"


def write(path: Path, document: object) -> None:
    """Replace the file as the kubelet does: a new file renamed over the old one."""
    temporary = path.with_suffix(".new")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)


def test_env_list_current_first_with_optional_expiries() -> None:
    """Comma-separated, `;expires=` per item, blanks ignored."""
    secrets = parse_secrets_list(f" new , old;expires={FUTURE},, ")
    assert [s.value for s in secrets] == ["new", "old"]
    assert secrets[0].expires_at is None
    assert secrets[1].expires_at == datetime(2998, 12, 31, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("old;expires=tomorrow", "not an ISO-8601"),
        ("old;expires=2026-01-01T00:00:00", "no UTC offset"),
        (";expires=2026-01-01T00:00:00Z", "without a secret"),
    ],
)
def test_env_list_errors(text: str, message: str) -> None:
    """A bad expiry is a configuration error, raised at startup."""
    with pytest.raises(ValueError, match=message):
        parse_secrets_list(text)


def test_file_format() -> None:
    """Objects with secret and expires, or bare strings; {} is an empty set."""
    secrets = parse_secrets_file(
        json.dumps({"secrets": [{"secret": "a"}, "b", {"secret": "c", "expires": PAST}]})
    )
    assert [(s.value, s.expires_at is None) for s in secrets] == [
        ("a", True), ("b", True), ("c", False),
    ]  # fmt: skip
    assert parse_secrets_file("{}") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"secret": "a"}', "unknown keys"),
        ('{"secrets": "a"}', "must be a list"),
        ('{"secrets": [1]}', r"secrets\[0\] must be a string or an object"),
        ('{"secrets": [{"secret": ""}]}', "non-empty string"),
        ('{"secrets": [{"secret": "a", "expiry": "2030-01-01T00:00:00Z"}]}', "unknown keys"),
        ('{"secrets": [{"secret": "a", "expires": 5}]}', "ISO-8601 string"),
        ('{"secrets": [{"secret": "a", "expires": "2030-01-01"}]}', "no UTC offset"),
    ],
)
def test_file_errors_name_the_problem(text: str, message: str) -> None:
    """Typos (a misspelt expires key included) are errors, never silently ignored."""
    with pytest.raises(ValueError, match=message):
        parse_secrets_file(text)


def test_secret_values_are_not_in_repr() -> None:
    """A stray repr or log of a secret object shows no value."""
    assert "hunter2-secret" not in repr(WebhookSecret("hunter2-secret"))


async def test_file_reloaded_when_replaced(tmp_path: Path) -> None:
    """A changed file is read again; an unchanged one is not reported as changed."""
    path = tmp_path / "secrets.json"
    write(path, {"secrets": ["one"]})
    source = SecretsFile(path)
    assert await source.refresh() is True
    assert await source.refresh() is False
    write(path, {"secrets": ["one", "two"]})
    assert await source.refresh() is True
    assert [s.value for s in source.secrets()] == ["one", "two"]
    assert (source.loaded, source.error) == (True, None)


async def test_a_broken_file_keeps_the_last_good_secrets(tmp_path: Path) -> None:
    """An invalid or vanished file leaves the previous secrets in force and says why."""
    path = tmp_path / "secrets.json"
    write(path, {"secrets": ["good"]})
    source = SecretsFile(path)
    await source.refresh()
    path.write_text("{oops")
    assert await source.refresh() is False
    assert [s.value for s in source.secrets()] == ["good"]
    assert source.error is not None
    assert "not valid JSON" in source.error
    path.unlink()
    await source.refresh()
    assert [s.value for s in source.secrets()] == ["good"]
    assert source.loaded


async def test_a_missing_file_is_not_loaded(tmp_path: Path) -> None:
    """A file that never existed leaves the source unloaded (the app is then not ready)."""
    source = SecretsFile(tmp_path / "absent.json")
    await source.refresh()
    assert (source.loaded, source.secrets()) == (False, ())
    assert source.error


async def test_provider_combines_sources_and_drops_expired_secrets(tmp_path: Path) -> None:
    """Valid secrets of every source, deduplicated; expired ones left out."""
    path = tmp_path / "secrets.json"
    write(
        path,
        {
            "secrets": [
                "whsec-test-file-new",
                {"secret": "whsec-test-file-old", "expires": PAST},
                "whsec-test-shared",
            ]
        },
    )
    settings = Settings(
        _env_file=None,
        webhook_secrets="whsec-test-env-new,whsec-test-shared",
        webhook_secrets_file=path,
    )
    provider = SecretProvider.from_settings(settings)
    await provider.refresh()
    assert provider.ready
    assert provider.keys() == (b"whsec-test-env-new", b"whsec-test-shared", b"whsec-test-file-new")
    status = provider.status()
    assert status["valid"] == 3
    assert "whsec-test-file-new" not in json.dumps(status)


async def test_keys_change_when_a_secret_expires() -> None:
    """The cached key set is recomputed as soon as the next expiry passes."""
    soon = datetime.now(UTC) + timedelta(hours=1)
    provider = SecretProvider([EnvSecrets([WebhookSecret("new"), WebhookSecret("old", soon)])])
    now = datetime.now(UTC).timestamp()
    assert provider.keys(now) == (b"new", b"old")
    assert provider.keys(soon.timestamp() - 0.001) == (b"new", b"old")
    assert provider.keys(soon.timestamp()) == (b"new",)


class CountingSource:
    """A source that counts its refreshes (a stand-in for the Redis-backed source to come)."""

    name = "counting"
    loaded = True
    error: str | None = None

    def __init__(self) -> None:
        self.refreshes = 0
        self.values: Sequence[WebhookSecret] = ()

    def secrets(self) -> Sequence[WebhookSecret]:
        return self.values

    async def refresh(self) -> bool:
        self.refreshes += 1
        self.values = [WebhookSecret(f"whsec-test-counting-{self.refreshes}")]
        return True


class GatedSource:
    """A source that reads its backing list when a refresh starts and may be held mid-way.

    Like a file read before a rotation is written: what a refresh returns is what was there
    when it began.
    """

    name = "gated"
    loaded = True
    error: str | None = None

    def __init__(self, *values: str) -> None:
        self.backing = list(values)
        self.values: tuple[WebhookSecret, ...] = ()
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    def secrets(self) -> Sequence[WebhookSecret]:
        return self.values

    async def refresh(self) -> bool:
        snapshot = tuple(WebhookSecret(value) for value in self.backing)
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        changed = snapshot != self.values
        self.values = snapshot
        return changed


async def test_a_secret_added_during_a_periodic_refresh_is_loaded_before_the_answer() -> None:
    """refresh_if_stale shares the in-flight reload, then waits for one that began after it."""
    source = GatedSource("whsec-test-old")
    provider = SecretProvider([source], min_refresh_interval=0.2)
    await provider.refresh()
    gate = asyncio.Event()
    source.gate = gate
    source.entered.clear()
    periodic = asyncio.create_task(provider.refresh())
    await source.entered.wait()  # the periodic refresh has read the old secrets
    source.backing.append("whsec-test-new")
    caller = asyncio.create_task(provider.refresh_if_stale())
    await asyncio.sleep(0)  # the caller is now waiting on the refresh in flight
    assert not caller.done()
    gate.set()
    assert await periodic is False
    assert await caller is True
    assert provider.keys() == (b"whsec-test-old", b"whsec-test-new")
    assert source.calls == 3


async def test_a_secret_added_just_after_a_refresh_is_loaded_before_the_answer() -> None:
    """Within min_refresh_interval of a refresh, the caller waits for the next one."""
    source = GatedSource("whsec-test-old")
    provider = SecretProvider([source], min_refresh_interval=0.2)
    await provider.refresh()
    source.backing.append("whsec-test-new")
    assert await provider.refresh_if_stale() is True
    assert provider.keys() == (b"whsec-test-old", b"whsec-test-new")
    assert source.calls == 2


async def test_concurrent_callers_share_refreshes() -> None:
    """A burst of mismatching signatures costs two reloads: the one in flight when each
    arrived, and one that began after them all."""
    source = GatedSource("whsec-test-old")
    provider = SecretProvider([source], min_refresh_interval=0.05)
    results = await asyncio.gather(*(provider.refresh_if_stale() for _ in range(50)))
    assert results == [True] * 50
    assert source.calls == 2
    assert await provider.refresh() is False  # the periodic refresh is not throttled
    assert source.calls == 3


async def test_a_failing_source_does_not_stop_the_others(tmp_path: Path) -> None:
    """A source whose refresh raises is logged; the other sources still refresh."""

    class Broken(CountingSource):
        async def refresh(self) -> bool:
            raise RuntimeError("boom")

    good = CountingSource()
    provider = SecretProvider([Broken(), good])
    assert await provider.refresh() is True
    assert provider.keys() == (b"whsec-test-counting-1",)
