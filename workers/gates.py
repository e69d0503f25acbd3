"""Composing ``RequestGate`` hooks: the client takes one gate, the workers need several."""

from __future__ import annotations

import httpx

from calhooks.service.calcom.client import RequestGate
from calhooks.service.calcom.tools import Tool


class GateChain:
    """Runs ``before`` hooks in order and ``after`` hooks in reverse, like middleware."""

    def __init__(self, *gates: RequestGate) -> None:
        self.gates = gates

    async def before(self, tool: Tool) -> None:
        for gate in self.gates:
            await gate.before(tool)

    async def after(self, tool: Tool, response: httpx.Response | None, elapsed: float) -> None:
        for gate in reversed(self.gates):
            await gate.after(tool, response, elapsed)
