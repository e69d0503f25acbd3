"""What calhooks wants in the organization: one webhook for this deployment.

The organization is the environment's (``CALHOOKS_API_KEY``/``CALHOOKS_ORG_ID``) or a
connection's (``connection``: its PCID); everything below is the same for both but the URL.

* subscriber URL: ``CALHOOKS_PUBLIC_URL`` + the intake path (``CALHOOKS_WEBHOOK_PATH``, then
  ``/<pcid>`` for a connection), marked with the deployment name (``<deployment>.<pcid>`` for
  a connection; see ``ownership``);
* active;
* triggers: the union of the triggers the loaded rules use and
  ``CALHOOKS_WEBHOOK_EXTRA_TRIGGERS``, each one Cal.com accepts (``WEBHOOK_TRIGGERS``);
* the default payload (no ``payloadTemplate``): the intake parses Cal.com's own envelope;
* calhooks' current secret from the secret store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS
from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions.errors import DesiredStateError, OwnershipError
from calhooks.service.subscriptions.ownership import subscriber_url
from calhooks.service.subscriptions.secret_store import StoredSecret, store_name


@dataclass(frozen=True, slots=True)
class DesiredWebhook:
    """The one webhook this deployment should have; ``secret`` is ``None`` until one exists.

    ``deployment`` is the ownership mark: the deployment's name, or ``<deployment>.<pcid>``
    for a connection's webhook."""

    subscriber_url: str
    deployment: str
    triggers: tuple[str, ...]
    secret: StoredSecret | None = None


#: Builds the desired webhook around a secret (``None``: none stored yet).
DesiredFactory = Callable[[StoredSecret | None], DesiredWebhook]


def parse_triggers(text: str) -> tuple[str, ...]:
    """Comma- or space-separated trigger names, upper-cased."""
    return tuple(part.upper() for part in text.replace(",", " ").split())


def normalize_triggers(triggers: Iterable[str]) -> tuple[str, ...]:
    """Unique triggers in Cal.com's order; an unknown name is an error naming the valid ones."""
    problem = _unknown_triggers(triggers)
    if problem:
        raise DesiredStateError(problem)
    wanted = set(triggers)
    return tuple(t for t in WEBHOOK_TRIGGERS if t in wanted)


def _unknown_triggers(triggers: Iterable[str]) -> str | None:
    unknown = sorted(set(triggers) - set(WEBHOOK_TRIGGERS))
    if not unknown:
        return None
    return (
        f"not webhook triggers Cal.com accepts: {', '.join(unknown)}"
        f" (valid: {', '.join(WEBHOOK_TRIGGERS)})"
    )


def desired_problems(settings: Settings, rule_triggers: Iterable[str] | None) -> list[str]:
    """Everything that keeps the settings and rules from making a webhook, all at once
    (``rule_triggers`` ``None``: the rules could not be read, their triggers are unknown)."""
    problems = []
    if not settings.public_url:
        problems.append(
            "CALHOOKS_PUBLIC_URL is not set: the public base URL Cal.com delivers to"
            " (e.g. https://hooks.example.com)"
        )
    else:
        try:
            subscriber_url(settings.public_url, settings.webhook_path, settings.webhook_deployment)
        except OwnershipError as exc:
            problems.append(str(exc))
    extra = parse_triggers(settings.webhook_extra_triggers or "")
    unknown = _unknown_triggers(extra if rule_triggers is None else [*rule_triggers, *extra])
    if unknown:
        problems.append(unknown)
    if rule_triggers is not None and not [*rule_triggers, *extra]:
        if settings.rules_file is None:
            problems.append(
                "no triggers to subscribe to: CALHOOKS_RULES_FILE is not set (the workers'"
                " rules file, whose triggers the webhook subscribes to) and"
                " CALHOOKS_WEBHOOK_EXTRA_TRIGGERS is empty"
            )
        else:
            problems.append(
                f"no triggers to subscribe to: no rule in CALHOOKS_RULES_FILE"
                f" {settings.rules_file} reacts to a Cal.com trigger for this organization"
                " (a rule's connections:/tenants: may leave it out) and"
                " CALHOOKS_WEBHOOK_EXTRA_TRIGGERS is empty"
            )
    return problems


def desired_webhook(
    settings: Settings,
    rule_triggers: Iterable[str],
    secret: StoredSecret | None,
    connection: str | None = None,
) -> DesiredWebhook:
    """The desired webhook from the settings, the rules' triggers and the current secret (of
    the environment's organization, or of the connection ``connection``, a PCID)."""
    rule_triggers = tuple(rule_triggers)
    problems = desired_problems(settings, rule_triggers)
    if problems:
        raise DesiredStateError("; ".join(problems))
    url = subscriber_url(
        settings.public_url or "", settings.webhook_path, settings.webhook_deployment, connection
    )
    extra = parse_triggers(settings.webhook_extra_triggers or "")
    triggers = normalize_triggers([*rule_triggers, *extra])
    mark = store_name(settings.webhook_deployment, connection)
    return DesiredWebhook(url, mark, triggers, secret)


def desired_factory(
    settings: Settings, rule_triggers: Iterable[str], connection: str | None = None
) -> DesiredFactory:
    """A ``DesiredFactory`` for ``settings`` and the rules' triggers (for the connection
    ``connection`` when given).

    Raises ``DesiredStateError`` at once when they cannot make a webhook.
    """
    triggers = tuple(rule_triggers)
    desired_webhook(settings, triggers, None, connection)  # fail now, not halfway through

    def build(secret: StoredSecret | None) -> DesiredWebhook:
        return desired_webhook(settings, triggers, secret, connection)

    return build
