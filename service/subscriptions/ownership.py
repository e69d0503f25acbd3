"""How calhooks tells its own webhooks from everyone else's in a Cal.com organization.

Cal.com webhooks carry no name, label or metadata (FACTS §4.8): ``id``, ``subscriberUrl``,
``active``, ``triggers``, ``payloadTemplate``, ``secret`` are all there is. So the mark goes
where Cal.com keeps it verbatim and delivers to unchanged: the subscriber URL's query string.
Every webhook calhooks creates points at ::

    <CALHOOKS_PUBLIC_URL><intake path>?calhooks=<CALHOOKS_WEBHOOK_DEPLOYMENT>

* a webhook is **own** when its URL carries ``calhooks=<this deployment's name>``, whatever
  its host or path: after a change of public URL the old webhook is still recognised, and
  ``apply --prune`` can remove it;
* every other webhook is **foreign** and is never changed or deleted, even one pointing at
  this intake without the mark (made by hand, signed with an operator's own secret);
* two deployments (staging, production) sharing one organization keep apart by their names.

A connection's webhook (``calhooks webhooks apply --connection``) delivers to the intake's
URL for that connection and is marked with the connection's store name::

    <CALHOOKS_PUBLIC_URL><intake path>/<pcid>?calhooks=<CALHOOKS_WEBHOOK_DEPLOYMENT>.<pcid>

so each connection's webhook is its own: when two connections (or a connection and the
environment's organization) are one and the same Cal.com organization, none of them takes the
others' webhooks for its stale ones, and ``--prune`` never deletes them.

The intake ignores the query string, so the mark costs nothing at delivery time.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode, urlsplit, urlunsplit

from calhooks.service.core.settings import WEBHOOK_DEPLOYMENT_PATTERN
from calhooks.service.core.webhookmark import MARK, owner_of
from calhooks.service.subscriptions.errors import OwnershipError

_DEPLOYMENT = re.compile(WEBHOOK_DEPLOYMENT_PATTERN)
_PCID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
__all__ = [
    "MARK",
    "check_connection_id",
    "check_deployment",
    "is_own",
    "owner_of",
    "same_endpoint",
    "subscriber_url",
]


def check_deployment(name: str) -> str:
    """``name`` if it can mark a webhook (letters, digits, ``.``, ``_``, ``-``; ≤ 63 chars)."""
    if not _DEPLOYMENT.match(name):
        raise OwnershipError(
            f"deployment name {name!r} must be 1-63 letters, digits, '.', '_' or '-'"
            " starting with a letter or digit"
        )
    return name


def subscriber_url(
    public_url: str, intake_path: str, deployment: str, connection: str | None = None
) -> str:
    """The URL this deployment's webhook delivers to, carrying its ownership mark - for the
    environment's organization, or for the connection ``connection`` (a PCID)."""
    parts = urlsplit(public_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise OwnershipError(
            f"public URL must be http(s)://host[:port][/prefix], got {public_url!r}"
        )
    if parts.query or parts.fragment:
        raise OwnershipError(f"public URL must have no query or fragment, got {public_url!r}")
    path = parts.path.rstrip("/") + "/" + intake_path.strip("/")
    mark = check_deployment(deployment)
    if connection is not None:
        path = path.rstrip("/") + "/" + check_connection_id(connection)
        mark = f"{mark}.{connection}"
    query = urlencode({MARK: mark})
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def check_connection_id(pcid: str) -> str:
    """``pcid`` if it can be a path segment of the intake's URL (letters, digits, ``._-``)."""
    if not _PCID.match(pcid):
        raise OwnershipError(f"connection id {pcid!r} cannot be part of a URL")
    return pcid


def is_own(url: str, deployment: str) -> bool:
    """Whether the webhook delivering to ``url`` belongs to ``deployment``."""
    return owner_of(url) == deployment


def same_endpoint(url: str, other: str) -> bool:
    """Whether two URLs reach the same endpoint (scheme, host, port, path; query ignored)."""
    try:
        a, b = urlsplit(url), urlsplit(other)
    except ValueError:
        return False
    return (a.scheme.lower(), a.netloc.lower(), a.path.rstrip("/") or "/") == (
        b.scheme.lower(),
        b.netloc.lower(),
        b.path.rstrip("/") or "/",
    )
