"""The signing secrets of each connection, for the intake's per-connection URLs.

A connection (``calhooks.service.connections``) has its own Cal.com webhook, signed with its
own secrets, delivering to ``<CALHOOKS_WEBHOOK_PATH>/<pcid>``. A delivery there is verified
with that connection's secrets only - never the environment organization's, never another
connection's - so a delivery signed for one organization and sent to another's URL is refused.

``ConnectionSecrets`` holds, in memory, one ``SecretProvider`` per connection, keyed by PCID:

* **Which PCIDs exist** comes from ``list_connections`` (the connection store's PCIDs, one
  ``HKEYS`` of a hash in Redis; nothing is decrypted). It is read at start, on every periodic
  refresh (``CALHOOKS_WEBHOOK_SECRETS_REFRESH``), and when a delivery names a PCID not known
  yet - at most once per ``min_refresh_interval`` however many such deliveries arrive, each of
  them waiting for that reload - so a connection added at run time verifies its very first
  delivery, and within one refresh anyway. A PCID that left the store is dropped at the next
  successful listing.
* **Its secrets** come from ``sources_for(pcid)``: the subscriptions' secret store of that
  connection (``<CALHOOKS_WEBHOOK_DEPLOYMENT>.<pcid>``), wrapped as secret sources. Each
  provider refreshes like the shared one (one ``GET`` of the store's version, the secrets read
  again only when it moved) and acknowledges the version it loaded in that connection's
  replicas record, which is what keeps ``calhooks webhooks rotate --connection`` from
  switching Cal.com before every intake replica knows the new secret. A signature matching
  none of a connection's secrets reloads that connection's secrets first (shared, rate
  limited), exactly as on the environment organization's URL.
* **During a Redis outage** nothing is forgotten: a failed listing keeps the known PCIDs and
  a failed source keeps its last good secrets, so deliveries to known connections keep being
  verified and spooled. Only a connection created during the outage is unknown until Redis
  is back (its deliveries get 401).

Memory is bounded by what operators store, never by what callers send: an unknown PCID in a
URL allocates nothing (the reload it may cause is shared and rate limited), and a provider
costs a few hundred bytes plus its secrets, so hundreds of connections cost well under a
megabyte. A periodic refresh of N connections costs N version reads and N acknowledgements,
at most ``REFRESH_CONCURRENCY`` at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import structlog

from calhooks.service.intake.secrets import SecretProvider, SecretSource

log = structlog.get_logger("calhooks.intake")

#: Connections whose secrets are refreshed at once (each refresh is one or two round trips).
REFRESH_CONCURRENCY = 32
#: Longest PCID looked up; a longer path segment (or an empty one, or one with a slash) is
#: refused without a reload of the connections.
MAX_PCID = 100

ListConnections = Callable[[], Awaitable[Collection[str]]]
SourcesFor = Callable[[str], Sequence[SecretSource]]


class ConnectionSecrets:
    """One ``SecretProvider`` per connection, refreshed in the background (module docstring)."""

    def __init__(
        self,
        list_connections: ListConnections,
        sources_for: SourcesFor,
        *,
        min_refresh_interval: float = 1.0,
    ) -> None:
        self._list = list_connections
        self._sources_for = sources_for
        self.min_refresh_interval = min_refresh_interval
        self._providers: dict[str, SecretProvider] = {}
        self.listed = False  # the connections have been listed at least once
        self.error: str | None = None  # why the last listing failed
        self._last_listing = float("-inf")  # when the last listing started (monotonic)
        self._started = 0  # listings started so far
        self._listing: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        """Connections known (not ``__len__``: an empty registry must stay truthy)."""
        return len(self._providers)

    def get(self, pcid: str) -> SecretProvider | None:
        """The provider of connection ``pcid``, or ``None`` for a PCID not known (hot path:
        a dictionary lookup)."""
        return self._providers.get(pcid)

    async def lookup(self, pcid: str) -> SecretProvider | None:
        """The provider of ``pcid``. An unknown PCID first waits for a listing of the
        connections that started after this call (shared by concurrent callers; a new one
        starts at most every ``min_refresh_interval``), so a connection added a moment ago
        is found; its secrets are then loaded before the answer."""
        provider = self._providers.get(pcid)
        if provider is not None or not pcid or len(pcid) > MAX_PCID or "/" in pcid:
            return provider  # known, or nothing a PCID can be: no reload for it
        ticket = self._started
        while True:
            task = self._in_flight()
            if task is not None:
                number = self._started
                await asyncio.shield(task)
                if number > ticket:
                    break
                continue
            if self._started > ticket:
                break
            wait = self._last_listing + self.min_refresh_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._start_listing()
        provider = self._providers.get(pcid)
        if provider is not None and not provider.ready:
            await provider.refresh()
        return provider

    def _in_flight(self) -> asyncio.Task[None] | None:
        task = self._listing
        return task if task is not None and not task.done() else None

    def _start_listing(self) -> asyncio.Task[None]:
        self._started += 1
        self._last_listing = time.monotonic()
        task = self._listing = asyncio.ensure_future(self._load_connections())
        return task

    async def _relist(self) -> None:
        await asyncio.shield(self._in_flight() or self._start_listing())

    async def _load_connections(self) -> None:
        try:
            found = set(await self._list())
        except Exception as exc:  # Redis away, or a store that cannot be read: keep what we know
            message = f"{type(exc).__name__}: {exc}"
            if message != self.error:
                log.error("secrets.connections_unlisted", reason=message, kept=len(self._providers))
            self.error = message
            return
        self.error = None
        self.listed = True
        added = sorted(found - self._providers.keys())
        gone = sorted(self._providers.keys() - found)
        for pcid in gone:
            del self._providers[pcid]
        for pcid in added:
            self._providers[pcid] = SecretProvider(
                self._sources_for(pcid), min_refresh_interval=self.min_refresh_interval
            )
        if added or gone:
            log.info(
                "secrets.connections_changed",
                connections=len(self._providers),
                added=added[:20],
                removed=gone[:20],
            )

    async def refresh(self) -> None:
        """List the connections, then refresh every connection's secrets (never raises)."""
        await self._relist()
        providers = list(self._providers.values())
        for start in range(0, len(providers), REFRESH_CONCURRENCY):
            batch = providers[start : start + REFRESH_CONCURRENCY]
            await asyncio.gather(*(provider.refresh() for provider in batch))

    async def run(self, interval: float) -> None:
        """Refresh every ``interval`` seconds, for ever (the app's background task)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # never let the refresher die; the next pass retries
                log.exception("secrets.connections_refresh_failed")

    def with_secret(self) -> int:
        """How many connections have at least one valid secret now."""
        return sum(1 for provider in self._providers.values() if provider.keys())

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: counts only (a deployment may have hundreds of connections)."""
        return {
            "known": len(self._providers),
            "with_secret": self.with_secret(),
            "listing": "ok" if self.listed and self.error is None else "unavailable",
        }
