"""Fixtures for the webhook subscription tests: settings aimed at the sandbox, a secret store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.core.secretbox import generate_key
from calhooks.service.core.settings import Settings
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID
from calhooks.service.subscriptions.secret_store import WebhookSecretStore
from tests.sandbox.server import RunningSandbox

PUBLIC_URL = "https://hooks.example.com"
ENCRYPTION_KEY = generate_key()


def make_settings(sandbox_url: str, **overrides: Any) -> Settings:
    """Settings for a deployment named ``test`` whose Cal.com is the sandbox."""
    values: dict[str, Any] = {
        "api_url": sandbox_url,
        "api_key": SANDBOX_API_KEY,
        "org_id": SANDBOX_ORG_ID,
        "public_url": PUBLIC_URL,
        "webhook_deployment": "test",
        "encryption_key": ENCRYPTION_KEY,
        "api_retry_base_delay": 0.01,
        **overrides,
    }
    return Settings(**values)


def write_rules(path: Path, *triggers: str) -> Path:
    """A rules file with one logging rule reacting to ``triggers``."""
    path.write_text(
        "rules:\n  - name: note\n    on: [" + ", ".join(triggers) + "]\n"
        "    steps:\n      - log: seen\n"
    )
    return path


@pytest.fixture
def settings(sandbox: RunningSandbox) -> Settings:
    return make_settings(sandbox.url)


@pytest.fixture
def store(settings: Settings, redis_client: aioredis.Redis) -> WebhookSecretStore:
    return WebhookSecretStore.from_settings(settings, redis_client)


@pytest.fixture
async def cal(sandbox: RunningSandbox, settings: Settings) -> AsyncIterator[CalcomClient]:
    async with CalcomClient.from_settings(settings) as client:
        yield client
