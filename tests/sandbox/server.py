"""``RunningSandbox``: a sandbox Cal.com served on loopback, as the ``sandbox`` fixture yields it.

Tests anywhere in the suite use it to point a client (or the intake, workers, MCP server)
at a fake Cal.com and then assert on what it saw: the store, the request log, the
deliveries it made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from calhooks.service.calcom import CalcomClient, Credentials
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID, RequestRecord, Sandbox
from calhooks.service.sandbox.state import Store


@dataclass
class RunningSandbox:
    url: str
    app: Starlette
    sandbox: Sandbox

    @property
    def store(self) -> Store:
        return self.sandbox.store

    def requests(self, tool: str | None = None) -> list[RequestRecord]:
        """The API requests received so far (only calls of ``tool`` when given)."""
        return self.sandbox.requests.records(tool)

    def client(
        self,
        api_key: str | None = SANDBOX_API_KEY,
        org_id: int | None = SANDBOX_ORG_ID,
        **options: Any,
    ) -> CalcomClient:
        """A ``CalcomClient`` for this sandbox (Acme's admin key by default)."""
        credentials = options.pop("credentials", None) or Credentials(api_key=api_key)
        return CalcomClient(base_url=self.url, credentials=credentials, org_id=org_id, **options)

    async def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the admin surface, e.g. ``await sandbox.admin("POST", "/events", json={...})``."""
        async with httpx.AsyncClient(base_url=f"{self.url}/_sandbox", timeout=30) as http:
            return await http.request(method, path, **kwargs)

    async def deliveries(
        self, *, wait: bool = True, trigger: str | None = None
    ) -> list[dict[str, Any]]:
        """The deliveries made so far, after waiting for those in flight (by default)."""
        params = {"wait": "true" if wait else "false"}
        if trigger:
            params["trigger"] = trigger
        response = await self.admin("GET", "/deliveries", params=params)
        response.raise_for_status()
        deliveries: list[dict[str, Any]] = response.json()["deliveries"]
        return deliveries
