"""Where the intake's signing secrets come from, each with an optional expiry.

Sources (each a ``SecretSource``), combined by a ``SecretProvider``:

* ``EnvSecrets`` - ``CALHOOKS_WEBHOOK_SECRETS``: comma-separated, the current secret first,
  each optionally followed by ``;expires=<ISO-8601 with offset>``::

      CALHOOKS_WEBHOOK_SECRETS='new-secret,old-secret;expires=2026-01-31T00:00:00Z'

* ``SecretsFile`` - ``CALHOOKS_WEBHOOK_SECRETS_FILE``: a JSON file, re-read whenever it changes
  (a Kubernetes Secret mounted as a directory is swapped in place on rotation)::

      {"secrets": [
          {"secret": "new-secret"},
          {"secret": "old-secret", "expires": "2026-01-31T00:00:00Z"}
      ]}

  An entry may also be a bare string (no expiry); ``{}`` means no secrets. Unknown keys are
  errors, so a misspelt ``expiry`` cannot leave an old secret valid for ever.

* later, secrets registered through Cal.com's webhook tools, kept encrypted in Redis: any
  object with the ``SecretSource`` methods can be passed to ``SecretProvider``.

A secret is valid until its expiry (exclusive); expired ones are simply no longer tried. A
file that becomes unreadable or invalid keeps its last good secrets (and says why in
``SecretProvider.status()``): a typo in a rotation must not turn every delivery away.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from calhooks.service.core.files import Stamp, file_stamp
from calhooks.service.core.logs import register_secret
from calhooks.service.core.settings import Settings

log = structlog.get_logger("calhooks.intake.secrets")

_EXPIRES = ";expires="


@dataclass(frozen=True)
class WebhookSecret:
    """One signing secret (never shown by ``repr``) and when it stops being valid."""

    value: str = field(repr=False)
    expires_at: datetime | None = None

    def valid_at(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at.timestamp()


class SecretSource(Protocol):
    """A place secrets come from. ``refresh`` must not raise: it records its error."""

    @property
    def name(self) -> str: ...

    @property
    def loaded(self) -> bool:
        """Whether the source has loaded successfully at least once."""
        ...

    @property
    def error(self) -> str | None:
        """Why the last load failed, or ``None``."""
        ...

    def secrets(self) -> Sequence[WebhookSecret]:
        """The secrets of the last successful load (expired ones included)."""
        ...

    async def refresh(self) -> bool:
        """Reload if the source changed; ``True`` when its secrets changed."""
        ...


def parse_expiry(text: str) -> datetime:
    """An ISO-8601 date-time that names its offset (``Z`` or ``+hh:mm``)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expiry {text!r} is not an ISO-8601 date-time") from None
    if moment.tzinfo is None:
        raise ValueError(f"expiry {text!r} has no UTC offset (add Z or +hh:mm)")
    return moment


def parse_secrets_list(text: str) -> list[WebhookSecret]:
    """``CALHOOKS_WEBHOOK_SECRETS``: ``secret[;expires=ISO]`` items, comma-separated."""
    secrets = []
    for item in text.split(","):
        value, _, expiry = item.strip().partition(_EXPIRES)
        value = value.strip()
        if not value:
            if expiry:
                raise ValueError("an expiry without a secret in CALHOOKS_WEBHOOK_SECRETS")
            continue
        secrets.append(WebhookSecret(value, parse_expiry(expiry) if expiry else None))
    return secrets


def parse_secrets_file(text: str) -> list[WebhookSecret]:
    """The JSON secrets file format (see the module docstring); ``ValueError`` if invalid."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError('must be a JSON object like {"secrets": [...]}')
    unknown = set(document) - {"secrets"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (expected only 'secrets')")
    entries = document.get("secrets", [])
    if not isinstance(entries, list):
        raise ValueError("'secrets' must be a list")
    return [_file_entry(index, entry) for index, entry in enumerate(entries)]


def _file_entry(index: int, entry: Any) -> WebhookSecret:
    where = f"secrets[{index}]"
    if isinstance(entry, str):
        entry = {"secret": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a string or an object")
    unknown = set(entry) - {"secret", "expires"}
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
    value, expires = entry.get("secret"), entry.get("expires")
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.secret must be a non-empty string")
    if expires is not None and not isinstance(expires, str):
        raise ValueError(f"{where}.expires must be an ISO-8601 string")
    try:
        return WebhookSecret(value, parse_expiry(expires) if expires else None)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


class EnvSecrets:
    """Secrets given once in configuration (``CALHOOKS_WEBHOOK_SECRETS``); never change."""

    name = "env"
    loaded = True
    error: str | None = None

    def __init__(self, secrets: Iterable[WebhookSecret]) -> None:
        self._secrets = tuple(secrets)

    @classmethod
    def from_text(cls, text: str) -> EnvSecrets:
        return cls(parse_secrets_list(text))

    def secrets(self) -> Sequence[WebhookSecret]:
        return self._secrets

    async def refresh(self) -> bool:
        return False


class SecretsFile:
    """A JSON secrets file, re-read when its identity, size or mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = "file"  # never the path: the name is shown by /readyz
        self.loaded = False
        self.error: str | None = None
        self._secrets: tuple[WebhookSecret, ...] = ()
        self._stamp: Stamp | None = None

    def secrets(self) -> Sequence[WebhookSecret]:
        return self._secrets

    async def refresh(self) -> bool:
        # A mounted Secret is a small file on tmpfs: reading it inline is cheaper than a thread.
        try:
            stamp = file_stamp(self.path)
            if stamp == self._stamp and self.loaded:
                return False
            secrets = tuple(parse_secrets_file(self.path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as problem:
            message = problem.strerror if isinstance(problem, OSError) else str(problem)
            if message != self.error:
                log.error("secrets.file_unusable", path=str(self.path), reason=message)
            self.error = message or type(problem).__name__
            return False
        self._stamp = stamp
        changed = secrets != self._secrets or not self.loaded
        self._secrets, self.loaded, self.error = secrets, True, None
        if changed:
            log.info("secrets.file_loaded", path=str(self.path), secrets=len(secrets))
        return changed


class SecretProvider:
    """The valid secrets of all sources, as HMAC keys, refreshed in the background.

    ``keys()`` is what the hot path calls: a tuple cached until a source changes or the next
    expiry passes.
    """

    def __init__(self, sources: Sequence[SecretSource], *, min_refresh_interval: float = 1.0):
        self.sources = tuple(sources)
        self.min_refresh_interval = min_refresh_interval
        self._keys: tuple[bytes, ...] = ()
        self._keys_until = -1.0  # recompute at first use
        self._last_refresh = float("-inf")  # when the last refresh started (monotonic)
        self._started = 0  # refreshes started so far
        self._generation = 0  # refreshes that changed a secret so far
        self._refreshing: asyncio.Task[bool] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, extra: Sequence[SecretSource] = ()
    ) -> SecretProvider:
        sources: list[SecretSource] = []
        if settings.webhook_secrets:
            sources.append(EnvSecrets.from_text(settings.webhook_secrets.get_secret_value()))
        if settings.webhook_secrets_file:
            sources.append(SecretsFile(settings.webhook_secrets_file.expanduser()))
        sources.extend(extra)
        interval = min(1.0, settings.webhook_secrets_refresh)
        return cls(sources, min_refresh_interval=interval)

    @property
    def ready(self) -> bool:
        """Every source has loaded at least once (an empty set of secrets is still loaded)."""
        return all(source.loaded for source in self.sources)

    def keys(self, now: float | None = None) -> tuple[bytes, ...]:
        """HMAC keys of every secret valid now, deduplicated, current ones first."""
        now = time.time() if now is None else now
        if now >= self._keys_until:
            self._recompute(now)
        return self._keys

    def _recompute(self, now: float) -> None:
        keys: dict[bytes, None] = {}
        next_expiry = float("inf")
        for source in self.sources:
            for secret in source.secrets():
                if secret.valid_at(now):
                    register_secret(secret.value)
                    keys[secret.value.encode()] = None
                    if secret.expires_at is not None:
                        next_expiry = min(next_expiry, secret.expires_at.timestamp())
        self._keys, self._keys_until = tuple(keys), next_expiry

    async def refresh(self) -> bool:
        """Refresh every source now - or join the refresh in flight; ``True`` when any secret
        changed. The periodic refresh, the one at start and ``refresh_if_stale`` share one
        reload at a time."""
        task = self._in_flight() or self._start_refresh()
        return await asyncio.shield(task)

    def _in_flight(self) -> asyncio.Task[bool] | None:
        task = self._refreshing
        return task if task is not None and not task.done() else None

    def _start_refresh(self) -> asyncio.Task[bool]:
        self._started += 1
        self._last_refresh = time.monotonic()
        task = asyncio.ensure_future(self._refresh_sources())
        self._refreshing = task
        return task

    async def _refresh_sources(self) -> bool:
        changed = False
        for source in self.sources:
            try:
                changed |= await source.refresh()
            except Exception:  # a source's bug must not stop the others or the loop
                log.exception("secrets.source_failed", source=source.name)
        if changed:
            self._keys_until = -1.0
            self._generation += 1
        return changed

    async def refresh_if_stale(self) -> bool:
        """Wait for a refresh that started after this call; ``True`` if any secret changed
        since the call.

        Called when a signature matches no secret: a secret added to a source just before the
        delivery arrived is then loaded before the delivery is answered, even when a refresh
        was already running (it may have read the source before the secret was there) or ran
        a moment ago. Refreshes are shared: concurrent callers wait for the same one, and a new
        one starts at most every ``min_refresh_interval`` seconds (a flood of bad signatures
        costs one reload per interval; each waits at most about that long).
        """
        ticket = self._started  # refreshes started before this call
        generation = self._generation
        while True:
            task = self._in_flight()
            if task is not None:
                number = self._started  # the one in flight
                await asyncio.shield(task)
                if number > ticket:
                    break
                continue
            if self._started > ticket:  # one that began after this call has finished
                break
            wait = self._last_refresh + self.min_refresh_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._start_refresh()
        return self._generation != generation

    async def run(self, interval: float) -> None:
        """Refresh every ``interval`` seconds, for ever (the app's background task)."""
        while True:
            await asyncio.sleep(interval)
            await self.refresh()

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: how many secrets are valid and each source's state - ``ok``, or
        ``unavailable`` (never loaded, or its last load failed: it keeps its last good
        secrets). Never values, paths or error text: those go to the log."""
        return {
            "valid": len(self.keys()),
            "sources": [
                {
                    "name": s.name,
                    "state": "ok" if s.loaded and s.error is None else "unavailable",
                    "secrets": len(s.secrets()),
                }
                for s in self.sources
            ],
        }
