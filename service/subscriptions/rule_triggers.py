"""The triggers the loaded rules react to: what the webhook must subscribe to."""

from __future__ import annotations

from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions.errors import DesiredStateError


def load_rule_triggers(settings: Settings) -> tuple[str, ...]:
    """The triggers the rules in ``CALHOOKS_RULES_FILE`` use (none without a rules file).

    A rules file that cannot be loaded is a ``DesiredStateError`` listing its problems:
    subscribing without knowing what the rules need could drop events they wait for.
    """
    # Imported here: the web process needs the rules package only to auto-apply, and never
    # the worker runtime (an import-linter contract in .importlinter holds that).
    from calhooks.workers.rules import RulesError, rule_triggers

    try:
        return rule_triggers(settings)
    except RulesError as exc:
        raise DesiredStateError(f"CALHOOKS_RULES_FILE {settings.rules_file}: {exc}") from exc
