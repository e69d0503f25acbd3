"""The rules a worker runs: ``CALHOOKS_RULES_FILE``, reloaded when the file changes.

A worker loads the file at startup and refuses to start if it is invalid (every problem is
listed). Afterwards it looks at the file (one ``stat``, a few microseconds) before each
event; a changed file (its modification time, size or inode: a Kubernetes ConfigMap update
swaps a symlink) is loaded again - so an event replayed right after a fix runs the fix. If
the new version is invalid, the rules in force stay in force and the problems are logged
once. Without ``CALHOOKS_RULES_FILE`` the worker runs no rule: it still takes events off the
queue and records that nothing matched.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from calhooks.service.core.files import Stamp, file_stamp_or_none
from calhooks.service.core.settings import Settings
from calhooks.workers.rules import RulesError, RuleSet, load_rules, rules_env
from calhooks.workers.rules.runner import Limits

logger = structlog.get_logger(__name__)

#: Seconds between looks at the file (0: before every event).
CHECK_INTERVAL = 0.0


class RulesSource:
    """Holds the current ``RuleSet`` and swaps in a new one when the file changes."""

    def __init__(
        self,
        path: Path | None,
        env: Mapping[str, Any] | None = None,
        *,
        check_interval: float = CHECK_INTERVAL,
        limits: Limits | None = None,
    ) -> None:
        self.path = path
        self.env = dict(env or {})
        self.check_interval = check_interval
        self.limits = limits or Limits()
        self._rules = RuleSet(limits=self.limits)
        self._signature: Stamp | None = None
        self._rejected: Stamp | None = None
        self._checked = 0.0
        if path is None:
            logger.warning("rules.none", hint="set CALHOOKS_RULES_FILE; no rule will run")
            return
        self._signature = file_stamp_or_none(path)
        self._rules = replace(load_rules(path, env=self.env), limits=self.limits)
        logger.info("rules.loaded", file=str(path), rules=[rule.name for rule in self._rules])

    @classmethod
    def from_settings(cls, settings: Settings) -> RulesSource:
        """The rules of ``CALHOOKS_RULES_FILE``; ``RulesError`` when they cannot be used."""
        path = Path(settings.rules_file).expanduser() if settings.rules_file else None
        limits = Limits(cost=settings.rules_cost_limit, for_each=settings.rules_for_each_limit)
        return cls(path, rules_env(settings), limits=limits)

    def current(self) -> RuleSet:
        """The rules in force, reloaded first if the file changed."""
        now = time.monotonic()
        if self.path is None or (self.check_interval and now - self._checked < self.check_interval):
            return self._rules
        self._checked = now
        signature = file_stamp_or_none(self.path)
        if signature is None or signature in (self._signature, self._rejected):
            return self._rules
        try:
            rules = replace(load_rules(self.path, env=self.env), limits=self.limits)
        except RulesError as error:
            self._rejected = signature
            logger.error(
                "rules.reload_rejected",
                file=str(self.path),
                problems=[str(problem) for problem in error.problems],
                kept=[rule.name for rule in self._rules],
            )
            return self._rules
        self._rules, self._signature, self._rejected = rules, signature, None
        logger.info("rules.reloaded", file=str(self.path), rules=[rule.name for rule in rules])
        return rules

    def triggers(self) -> frozenset[str]:
        return self._rules.triggers

    def describe(self) -> dict[str, Any]:
        return {
            "file": str(self.path) if self.path else None,
            "rules": [rule.name for rule in self._rules],
        }
