"""Credentials in tool answers and parameters, sealed before anything records them.

The registry marks the fields that carry credentials (``Tool.secret_outputs``,
``Tool.secret_inputs``: a managed organization's API key, webhook secrets, delegation
credentials' private keys). ``Sealer.seal`` returns a copy of a value with each of them
replaced by ``{"$sealed": <Fernet token>}`` (``CALHOOKS_ENCRYPTION_KEY``), or by
``[REDACTED]`` when no key is configured; ``Sealer.unseal`` gives the clear value back to
the code that needs it (a later step of a re-run). What is stored in Redis, printed by the
CLI or logged holds the sealed form only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import structlog

from calhooks.service.calcom.tools import FieldPath, Tool
from calhooks.service.core.logs import REDACTED
from calhooks.service.core.secretbox import SecretBox, SecretBoxError
from calhooks.service.core.settings import Settings

logger = structlog.get_logger(__name__)

SEALED = "$sealed"


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED} and isinstance(value[SEALED], str)


def _rewrite(value: Any, path: FieldPath, change: Any) -> Any:
    """``value`` with the field at ``path`` replaced by ``change(field)`` (copies on the way)."""
    if not path:
        return change(value)
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(value, list):
        return [_rewrite(item, rest, change) for item in value]
    if isinstance(value, dict) and head in value:
        return {**value, head: _rewrite(value[head], rest, change)}
    return value


class Sealer:
    """Seals and unseals the credential fields of tool answers and parameters."""

    def __init__(self, box: SecretBox | None) -> None:
        self.box = box

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        key = settings.encryption_key
        return cls(SecretBox(key.get_secret_value()) if key is not None else None)

    def _seal_one(self, value: Any) -> Any:
        if value is None or is_sealed(value) or value == REDACTED:
            return value
        if self.box is None:
            return REDACTED
        return {SEALED: self.box.encrypt(json.dumps(value))}

    def _unseal_one(self, value: Any) -> Any:
        if not is_sealed(value):
            return value
        if self.box is None:
            logger.warning("sealing.no_key")
            return REDACTED
        try:
            return json.loads(self.box.decrypt(value[SEALED]))
        except SecretBoxError:
            logger.warning("sealing.unseal_failed")
            return REDACTED

    def seal(self, paths: Iterable[FieldPath], value: Any) -> Any:
        for path in paths:
            value = _rewrite(value, path, self._seal_one)
        return value

    def unseal(self, paths: Iterable[FieldPath], value: Any) -> Any:
        for path in paths:
            value = _rewrite(value, path, self._unseal_one)
        return value

    def seal_output(self, tool: Tool, value: Any) -> Any:
        """A tool's answer (``data``) as it may be recorded."""
        return self.seal(tool.secret_outputs, value)

    def unseal_output(self, tool: Tool, value: Any) -> Any:
        """A recorded answer as the tool gave it."""
        return self.unseal(tool.secret_outputs, value)

    def seal_params(self, tool: Tool, params: Any) -> Any:
        """A tool's parameters as they may be recorded."""
        return self.seal(tool.secret_inputs, params)
