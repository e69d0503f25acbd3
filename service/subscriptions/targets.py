"""Which organizations' webhooks a command or the start-up apply works on: the targets.

A **target** is one Cal.com organization calhooks keeps a webhook in:

* the environment's organization (``CALHOOKS_API_KEY`` or the platform client,
  ``CALHOOKS_ORG_ID``, ``CALHOOKS_API_URL``): store ``<deployment>``, URL
  ``<public URL><webhook path>``; what every command does without ``--connection``;
* a connection (``calhooks.service.connections``): store ``<deployment>.<pcid>``, URL
  ``<public URL><webhook path>/<pcid>``, and every Cal.com call made with the connection's
  own credentials, org id and base URL - so its webhook is created in its organization, by
  its key, and signs with its own secrets.

``resolve_targets`` turns ``--connection NAME|PCID`` (repeatable) and ``--all-connections``
into targets; names are looked up in the ``default`` tenant, PCIDs in any.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from calhooks.service.calcom.client import CalcomClient, Credentials
from calhooks.service.connections.store import Connection, ConnectionStore, ConnectionStoreError
from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions.desired import DesiredFactory, desired_factory
from calhooks.service.subscriptions.errors import DesiredStateError
from calhooks.service.subscriptions.secret_store import WebhookSecretStore


class TargetError(DesiredStateError):
    """A connection named on the command line does not exist or cannot have a webhook."""


class TargetGoneError(TargetError):
    """The connection was removed while its webhook was about to be applied."""


#: A check run under the webhooks lock before anything changes (``Target.guard``).
Guard = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Target:
    """One organization's webhook: the environment's (``connection`` None) or a connection's."""

    connection: Connection | None = None

    @property
    def pcid(self) -> str | None:
        return None if self.connection is None else self.connection.info.pcid

    @property
    def name(self) -> str | None:
        return None if self.connection is None else self.connection.info.name

    @property
    def label(self) -> str:
        """How output names it: ``environment`` or ``connection NAME (PCID)``."""
        if self.connection is None:
            return "environment organization"
        return f"connection {self.connection.info.name} ({self.connection.info.pcid})"

    @property
    def org_id(self) -> int | None:
        """The org id passed to the webhook tools (``None``: the client's own default)."""
        return None if self.connection is None else self.connection.info.org_id

    def check(self) -> None:
        """Raise ``TargetError`` when this organization cannot have a webhook managed."""
        if self.connection is not None and self.connection.info.org_id is None:
            raise TargetError(
                f"{self.label} has no org id: organization webhooks need one (add the"
                " connection again with --org-id)"
            )

    def guard(self, store: WebhookSecretStore) -> Guard | None:
        """For a connection, a check that it is still stored, run by ``apply`` once it holds
        the webhooks lock: an apply that waited for ``calhooks connections remove`` (which
        holds that lock while it deletes the webhook) must not make the webhook again."""
        if self.connection is None:
            return None
        connections = ConnectionStore(store.redis, store.box)
        pcid, label = self.connection.info.pcid, self.label

        async def still_stored() -> None:
            if not await connections.exists(pcid):
                raise TargetGoneError(f"{label} was removed: no webhook is made for it")

        return still_stored

    def store(self, settings: Settings, redis: aioredis.Redis) -> WebhookSecretStore:
        return WebhookSecretStore.from_settings(settings, redis, connection=self.pcid)

    def desired(self, settings: Settings, rule_triggers: Iterable[str]) -> DesiredFactory:
        return desired_factory(settings, rule_triggers, self.pcid)

    def rule_triggers(self, settings: Settings) -> tuple[str, ...]:
        """The triggers of the rules that run for this organization (a rule's ``connections:``
        and ``tenants:`` applied): what its webhook subscribes to."""
        from calhooks.service.subscriptions.rule_triggers import (
            connection_rule_triggers,
            load_rule_triggers,
        )

        if self.connection is None:
            return load_rule_triggers(settings, every=False)
        return connection_rule_triggers(settings, self.connection)

    def client(self, cal: CalcomClient) -> CalcomClient:
        """``cal`` itself for the environment's organization; for a connection, a client with
        the connection's credentials, org id and base URL sharing ``cal``'s pool and policy."""
        if self.connection is None:
            return cal
        info = self.connection.info
        return cal.with_credentials(
            self.connection.credentials, base_url=info.base_url, org_id=info.org_id
        )


ENVIRONMENT = Target()


def environment_configured(settings: Settings) -> bool:
    """Whether the environment names an organization calhooks can act in (credentials)."""
    credentials = Credentials.from_settings(settings)
    return bool(credentials.api_key or (credentials.client_id and credentials.client_secret))


async def connection_targets(
    settings: Settings, redis: aioredis.Redis, refs: Sequence[str] = (), *, everything: bool
) -> list[Target]:
    """Targets for ``refs`` (names or PCIDs, in order, each once) or, with ``everything``,
    for every stored connection; ``TargetError`` for a ref matching none."""
    try:
        store = ConnectionStore.from_settings(settings, redis)
    except ConnectionStoreError as exc:
        raise TargetError(str(exc)) from exc
    found: dict[str, Target] = {}
    try:
        if everything:
            for info in await store.connections():
                connection = await store.get(info.pcid, tenant=None)
                if connection is not None:
                    found.setdefault(info.pcid, Target(connection))
        for ref in refs:
            connection = await store.find(ref)
            if connection is None:
                raise TargetError(
                    f"unknown connection {ref!r}: give a name of the default tenant or a PCID"
                    " (list them with `calhooks connections list`)"
                )
            found.setdefault(connection.info.pcid, Target(connection))
    except ConnectionStoreError as exc:
        raise TargetError(str(exc)) from exc
    return list(found.values())
