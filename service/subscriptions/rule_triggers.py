"""The triggers the loaded rules react to: what the webhook must subscribe to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions.errors import DesiredStateError

if TYPE_CHECKING:
    from calhooks.service.connections.store import Connection


def load_rule_triggers(settings: Settings, *, every: bool = True) -> tuple[str, ...]:
    """The triggers the rules in ``CALHOOKS_RULES_FILE`` use (none without a rules file).

    A rules file that cannot be loaded is a ``DesiredStateError`` listing its problems:
    subscribing without knowing what the rules need could drop events they wait for.
    ``every=False``: only the rules for the environment's organization (no ``connections:``
    or ``tenants:`` of their own).
    """
    return _triggers(settings, every=every, connection=None)


def connection_rule_triggers(settings: Settings, connection: Connection) -> tuple[str, ...]:
    """The triggers of the rules that run for ``connection`` (``load_rule_triggers``'s rules
    with their ``connections:``/``tenants:`` applied): what its webhook subscribes to."""
    return _triggers(settings, every=False, connection=connection)


def _triggers(settings: Settings, *, every: bool, connection: Connection | None) -> tuple[str, ...]:
    # Imported here: the web process needs the rules package only to auto-apply, and never
    # the worker runtime (an import-linter contract in .importlinter holds that).
    from calhooks.workers.rules import RulesError, rule_triggers
    from calhooks.workers.rules.scope import ALL, Origin

    origin: Origin | None = None
    if connection is not None:
        info = connection.info
        origin = Origin(info.pcid, info.name, info.tenant, info.org_id)
    try:
        return rule_triggers(settings, ALL if every else origin)
    except RulesError as exc:
        raise DesiredStateError(f"CALHOOKS_RULES_FILE {settings.rules_file}: {exc}") from exc
