"""The rules file as the console shows it: its text, rules, triggers, problems, load time.

The web process does not run rules; it reads ``CALHOOKS_RULES_FILE`` itself, again whenever
the file changed since the last look, and keeps the last good rules alongside the problems
of a newer version that failed to load (as the workers do: they keep running the last good
rules when an edit breaks the file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calhooks.workers.rules import RulesError, RuleSet, load_rules

_MAX_TEXT = 200_000


@dataclass
class RulesFile:
    path: Path | None
    env: dict[str, Any]
    rules: RuleSet = field(default_factory=RuleSet)
    text: str = ""
    loaded_at: float | None = None
    problems: list[str] = field(default_factory=list)
    _signature: tuple[int, int] | None = None

    def refresh(self) -> RulesFile:
        """Reload when the file changed (or appeared); returns itself."""
        if self.path is None:
            return self
        try:
            stat = self.path.stat()
        except OSError as exc:
            self.problems = [f"cannot read {self.path}: {exc.strerror}"]
            self._signature = None
            return self
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature == self._signature:
            return self
        self._signature = signature
        try:
            self.text = self.path.read_text()[:_MAX_TEXT]
            self.rules = load_rules(self.path, env=self.env)
        except RulesError as error:
            self.problems = [str(problem) for problem in error.problems]
            return self
        except (OSError, UnicodeDecodeError) as exc:
            self.problems = [f"cannot read {self.path}: {exc}"]
            return self
        self.problems = []
        self.loaded_at = time.time()
        return self

    @property
    def modified_at(self) -> float | None:
        return self._signature[0] / 1e9 if self._signature else None
