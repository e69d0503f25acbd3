"""calhooks' settings: every environment variable in one place.

All variables carry the ``CALHOOKS_`` prefix and are read once per process by
``get_settings()``. ``python -m calhooks.service.core.settings`` prints the Markdown table of
every variable; the docs site's Configuration page is built with it (``scripts/docs_hooks.py``),
so the two cannot drift apart.

Groups (by field-name prefix): Cal.com API access, logging, Redis, intake, workers, MCP,
webhook subscriptions, console.
Secrets are ``SecretStr`` so a stray ``repr`` never shows them.

A bad value (``CALHOOKS_ORG_ID=abc``, a ``CALHOOKS_API_URL`` without a scheme, a key that is
not a Fernet key) makes ``get_settings()`` raise ``SettingsError``: one line naming each
variable and what is wrong with it (a secret's value is never repeated), which the CLI and
``python -m calhooks.service`` print before exiting with status 1.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from calhooks.service.core import resources
from calhooks.service.core.secretbox import SecretBox, SecretBoxError

ENV_PREFIX = "CALHOOKS_"
#: A deployment name as it marks webhook URLs (service/subscriptions/ownership.py).
WEBHOOK_DEPLOYMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class Settings(BaseSettings):
    """Runtime configuration, from the environment (and an optional ``.env`` file)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    # Cal.com API access.
    api_url: str = Field(
        "https://api.cal.com", description="Base URL of Cal.com's API (no /v2 suffix)."
    )
    api_key: SecretStr | None = Field(
        None, description="Cal.com API key (`cal_live_...`), sent as `Authorization: Bearer`."
    )
    client_id: str | None = Field(
        None, description="Platform OAuth client id (`x-cal-client-id`), instead of an API key."
    )
    client_secret: SecretStr | None = Field(
        None, description="Platform OAuth client secret (`x-cal-secret-key`), with client_id."
    )
    org_id: int | None = Field(
        None, description="Default `orgId` for tools that take one when a call omits it."
    )
    api_timeout: float = Field(10.0, gt=0, description="Seconds to wait for each Cal.com request.")
    api_connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait to connect.")
    api_retries: int = Field(
        3, ge=0, description="Retries of a failed Cal.com request (429, 5xx, timeouts)."
    )
    api_retry_base_delay: float = Field(
        0.5, ge=0, description="First back-off delay in seconds; doubles on each retry."
    )
    api_retry_max_delay: float = Field(
        30.0, ge=0, description="Longest single wait between retries, in seconds."
    )
    api_max_connections: int = Field(
        20, ge=1, description="Connection pool size toward Cal.com per process."
    )

    # Redis (queue, dedupe, shared state). Unset: an embedded redis-server under data_dir.
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL (`redis://`, `rediss://`, `unix://`); unset: an embedded Redis.",
    )
    redis_sentinels: str | None = Field(
        default=None,
        description="Sentinel `host:port,host:port`; with it, redis_url's host is ignored.",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", description="Sentinel master name (with redis_sentinels)."
    )
    data_dir: Path = Field(
        default=Path("~/.local/share/calhooks"),
        description=(
            "Local state: the embedded Redis (when redis_url is unset), the spool. `calhooks"
            " dev` uses it when set, else `~/.local/share/calhooks/dev`."
        ),
    )
    redis_socket_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a redis-py client (CLI, secret store, MCP) waits for a reply.",
    )
    redis_connect_timeout: float = Field(
        default=2.0, gt=0, description="Seconds a redis-py client waits to connect."
    )
    queue_name: str = Field(default="arq:queue", description="arq queue the intake fills.")
    encryption_key: SecretStr | None = Field(
        default=None,
        description="Fernet key encrypting secrets kept in Redis (`calhooks keygen` makes one).",
    )

    # Logging.
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest log level written."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`json` lines, human `console`, or `auto` (console on a terminal)."
    )

    # Intake (service/: `calhooks serve`, the webhook endpoint, its spool and probes).
    host: str = Field("127.0.0.1", description="Address `calhooks serve` listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port `calhooks serve` listens on.")
    probe_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the web process' `/livez`, `/readyz`, `/metrics` (not public); "
        "unset: served on `port`.",
    )
    webhook_path: str = Field(
        "/webhooks/cal", pattern=r"^/", description="Path Cal.com posts deliveries to."
    )
    webhook_secrets: SecretStr | None = Field(
        None,
        description="Signing secrets, comma-separated, current first; `SECRET;expires=ISO8601`.",
    )
    webhook_secrets_file: Path | None = Field(
        None, description="JSON file of signing secrets with expiries, re-read when it changes."
    )
    webhook_secrets_refresh: float = Field(
        5.0,
        gt=0,
        description="Seconds between refreshes of the webhook secrets (the secrets file, the"
        " secrets in Redis) and of the connections whose URLs the intake serves.",
    )
    allow_unsigned: bool = Field(
        False,
        description="Accept deliveries signed `no-secret-provided` (webhooks without secret).",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest delivery body accepted; larger gets 413."
    )
    memory_limit: int | None = Field(
        None,
        ge=16 * 1024 * 1024,
        description="Bytes of memory the web process has; unset: the cgroup's `memory.max`, "
        "else 512 MiB. Sizes `read_budget_bytes`.",
    )
    read_budget_bytes: int | None = Field(
        None,
        ge=64 * 1024,
        description="Bytes of bodies read at once over all connections (past it: 503); "
        "unset: memory_limit / 8, at least 4 x max_body_bytes.",
    )
    body_read_timeout: float = Field(
        10.0, gt=0, description="Seconds a sender has to send a whole body; slower gets 408."
    )
    dedupe_window: int = Field(
        7 * 24 * 3600, ge=60, description="Seconds a delivery's body is remembered to drop repeats."
    )
    redis_deadline: float = Field(
        0.25, gt=0, description="Seconds the intake waits for Redis before spooling to disk."
    )
    connection_rate: int = Field(
        120,
        ge=0,
        le=60_000,
        description="Events a minute each connection's events are released at past its burst "
        "(0: no pacing); the environment's organization is never paced.",
    )
    connection_burst: int = Field(
        120, ge=1, description="Events a connection may have released at once before pacing."
    )
    spool_dir: Path | None = Field(
        None, description="Directory of the intake's disk spool; unset: `<data_dir>/spool`."
    )
    spool_max_bytes: int = Field(
        512 * 1024 * 1024, ge=1024 * 1024, description="Spool size at which deliveries get 503."
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies trusted for `X-Forwarded-For`/`-Proto` (comma-separated, or `*`).",
    )
    shutdown_timeout: float = Field(
        20.0, gt=0, description="Seconds in-flight requests get to finish on SIGTERM."
    )

    # Workers (workers/, `calhooks worker`).
    worker_http_host: str = Field(
        "0.0.0.0",  # noqa: S104 - probes and Prometheus reach the pod's address
        description="Address of the worker's `/livez`, `/readyz`, `/metrics` server.",
    )
    worker_http_port: int = Field(
        9091, ge=0, le=65535, description="Port of the worker's probe server (0: no server)."
    )
    worker_name: str | None = Field(
        None, description="Name of this worker in its health key and logs; unset: host-pid."
    )
    worker_max_jobs: int = Field(10, ge=1, description="Events one worker process runs at once.")
    worker_poll_delay: float = Field(
        0.5, gt=0, description="Seconds between queue polls when no wake-up comes (fallback)."
    )
    worker_job_timeout: float = Field(
        300.0, gt=0, description="Seconds one attempt at an event may run before it is retried."
    )
    worker_job_completion_wait: int = Field(
        25, ge=0, description="On SIGTERM, seconds running events get to finish before requeue."
    )
    worker_max_tries: int = Field(
        16, ge=1, description="Attempts at a failing rule before it is dead-lettered."
    )
    worker_retry_base_delay: float = Field(
        10.0, gt=0, description="First retry delay in seconds; doubles each try, with jitter."
    )
    worker_retry_max_delay: float = Field(
        3600.0, gt=0, description="Longest delay between two tries (defaults span ~4-7 h)."
    )
    worker_rate_limit_per_minute: int = Field(
        120, ge=0, description="Cal.com requests per minute across all workers (0: no limit)."
    )
    worker_rate_limit_window: float = Field(
        60.0, gt=0, description="Seconds of the fixed window Cal.com counts requests in."
    )
    worker_rate_limit_hold: float = Field(
        1.0,
        ge=0,
        description=(
            "Longest a job holds its worker slot waiting for its API key's rate-limit budget;"
            " a longer wait reserves the request's slot and re-queues the job for then, so"
            " the slot serves other organizations meanwhile."
        ),
    )
    worker_ordering_wait: float = Field(
        30.0, ge=0, description="Seconds a cancellation waits for its booking's creation."
    )
    worker_record_ttl: int = Field(
        7 * 24 * 3600, ge=60, description="Seconds step records and event logs are kept."
    )
    worker_health_interval: float = Field(
        10.0, gt=0, description="Seconds between writes of the worker's own health key."
    )
    worker_lease: float = Field(
        10.0,
        ge=1,
        description="Seconds a running event's claim and booking lock outlive a dead worker.",
    )
    worker_redis_timeout: float = Field(
        5.0, gt=0, description="Seconds a worker waits on Redis (connect, each command)."
    )
    worker_dead_letter_max: int = Field(
        10_000, ge=1, description="Most dead-letter entries kept; the oldest go first."
    )
    worker_dead_letter_max_age: int = Field(
        30 * 24 * 3600, ge=60, description="Seconds a dead-letter entry is kept."
    )
    metrics_connections: int = Field(
        20,
        ge=0,
        description="Connections with a metrics label of their own in a worker; others: other.",
    )

    # Reconciliation (workers/reconcile/, `calhooks reconcile`; docs/reconciliation.md).
    reconcile_period: float = Field(
        300.0, ge=0, description="Seconds between reconciliation passes in the workers (0: none)."
    )
    reconcile_rate_share: float = Field(
        0.1, gt=0, le=1, description="Share of the rate limit a reconciliation pass may spend."
    )
    reconcile_grace: float = Field(
        60.0, ge=0, description="Seconds a just-changed booking waits before it can be recovered."
    )

    # Rules (workers/rules/, `calhooks rules check|test`).
    rules_file: Path | None = Field(
        None, description="YAML rules file the workers run; its triggers are the webhook's."
    )
    rules_env: dict[str, Any] = Field(
        {}, description='JSON object laid over the rules file\'s `env:` (`{"flag": true}`).'
    )
    rules_cost_limit: int = Field(
        100_000,
        ge=1,
        description="Budget of one CEL expression's estimated steps; over it fails the rule.",
    )
    rules_for_each_limit: int = Field(
        500, ge=1, description="Most items one `for_each` step may loop over; more fails the rule."
    )

    # MCP server (service/mcp/: `/cal-organizations`, `calhooks mcp`, `calhooks connections`).
    mcp_token: SecretStr | None = Field(
        None,
        description="Bearer token MCP clients send to `/cal-organizations` (tenant `default`).",
    )
    mcp_tokens: SecretStr | None = Field(
        None,
        description="More tokens as `tenant:token,...`; each sees only its tenant's connections.",
    )

    # Webhook subscriptions (service/subscriptions/, `calhooks webhooks ...`).
    public_url: str | None = Field(
        None,
        description="Public base URL Cal.com delivers to (`https://hooks.example.com`).",
    )
    webhook_deployment: str = Field(
        "default",
        pattern=WEBHOOK_DEPLOYMENT_PATTERN,
        description="Name marking this deployment's webhooks (`?calhooks=NAME` in their URL).",
    )
    webhook_extra_triggers: str | None = Field(
        None, description="Triggers to subscribe to besides the rules' ones, comma-separated."
    )
    webhook_rotation_grace: float = Field(
        3600.0, ge=0, description="Seconds an old secret stays valid after `webhooks rotate`."
    )
    webhooks_auto_apply: bool = Field(
        False, description="Apply the webhook plan (never pruning) when `calhooks serve` starts."
    )

    # Web console (service/console/, `/console`; off unless a user is configured).
    console_users: SecretStr | None = Field(
        None,
        description="Console sign-ins `name:role:hash,...` (role `operator` or `read-only`).",
    )

    def effective_memory_limit(self) -> int:
        """``memory_limit``, else the cgroup's limit, else ``DEFAULT_MEMORY``."""
        return self.memory_limit or resources.memory_limit() or resources.DEFAULT_MEMORY

    def effective_read_budget(self) -> int:
        """``read_budget_bytes``, else an eighth of the memory (at least 4 largest bodies)."""
        if self.read_budget_bytes is not None:
            return self.read_budget_bytes
        return max(self.effective_memory_limit() // 8, 4 * self.max_body_bytes)

    @field_validator("data_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("api_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = _split(value)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s)://host[:port] URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not carry credentials, a query or a fragment")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = _split(value.get_secret_value())
        if parts is None or parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("must name a host (redis://host:6379/0)")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                SecretBox(value.get_secret_value())
            except SecretBoxError:
                raise ValueError(
                    "is not a Fernet key or comma-separated list of them "
                    "(make one with `calhooks keygen`)"
                ) from None
        return value


def _split(url: str) -> Any:
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        return None
    return parts


class SettingsError(ValueError):
    """The environment holds a bad setting; the message is one line naming the variables."""


def _describe(error: Any) -> str:
    field = str(error["loc"][0]) if error.get("loc") else ""
    variable = ENV_PREFIX + field.upper() if field else "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    info = Settings.model_fields.get(field)
    secret = info is not None and "SecretStr" in str(info.annotation)
    value = error.get("input")
    if secret or isinstance(value, dict) or value is None:
        return f"{variable}: {message}"
    shown = repr(value if len(str(value)) <= 60 else str(value)[:57] + "...")
    return f"{variable}: {message} (got {shown})"


def load_settings() -> Settings:
    """``Settings()`` from the environment; ``SettingsError`` in one line when something is bad."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(e) for e in exc.errors())) from None
    except SourceError as exc:  # a JSON setting that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        variable = ENV_PREFIX + found.group(1).upper() if found else "a setting"
        raise SettingsError(f"{variable}: is not valid JSON") from None


@cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return load_settings()


def settings_table() -> str:
    """The Markdown table of every variable, as the docs' Configuration page shows it."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "—" if default is None else f"`{default}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {info.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
