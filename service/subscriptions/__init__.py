"""Webhook subscriptions: the Cal.com webhook calhooks registers for itself, and its secrets.

* ``ownership`` - how calhooks' own webhooks are recognised (a mark in the subscriber URL);
* ``desired`` - what calhooks wants: one webhook per deployment, from settings and rules;
* ``remote`` - the organization's webhooks as Cal.com reports them;
* ``plan`` - desired vs actual, as a list of actions (pure);
* ``apply`` - carrying a plan out through ``CalcomClient``, under a Redis lock (``lock``);
* ``secret_store`` - generated secrets in Redis, encrypted, with expiries;
* ``secret_source`` - the store as one of the intake's secret sources;
* ``propagation`` - waiting until every intake replica has loaded a new secret;
* ``rotate`` - a new secret with no delivery rejected;
* ``ping`` - a test delivery and whether the intake verified it;
* ``report`` - plans and outcomes as text and JSON;
* ``targets`` - which organization: the environment's, or a connection's;
* ``arrivals`` - the first apply of a connection stored while the web process runs;
* ``removal`` - a connection removed with its webhook and secrets;
* ``startup`` - what ``calhooks serve`` takes: the secret source, auto-apply;
* ``errors`` - every error above, under ``SubscriptionError``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calhooks.service.subscriptions.apply import ApplyResult, apply_webhooks, plan_current
    from calhooks.service.subscriptions.desired import DesiredWebhook, desired_factory
    from calhooks.service.subscriptions.errors import SubscriptionError
    from calhooks.service.subscriptions.plan import Plan, plan_webhooks
    from calhooks.service.subscriptions.rotate import RotationResult, rotate_secret
    from calhooks.service.subscriptions.secret_store import StoredSecret, WebhookSecretStore

#: Exported names by module, imported on first use (``startup``, all ``calhooks serve``
#: needs, does without the Cal.com client and the planner).
_EXPORTS = {
    "ApplyResult": "apply",
    "apply_webhooks": "apply",
    "plan_current": "apply",
    "DesiredWebhook": "desired",
    "desired_factory": "desired",
    "Plan": "plan",
    "plan_webhooks": "plan",
    "RotationResult": "rotate",
    "rotate_secret": "rotate",
    "StoredSecret": "secret_store",
    "SubscriptionError": "errors",
    "WebhookSecretStore": "secret_store",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ApplyResult",
    "DesiredWebhook",
    "Plan",
    "RotationResult",
    "StoredSecret",
    "SubscriptionError",
    "WebhookSecretStore",
    "apply_webhooks",
    "desired_factory",
    "plan_current",
    "plan_webhooks",
    "rotate_secret",
]
