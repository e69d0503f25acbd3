"""The ownership mark in a calhooks webhook's subscriber URL (``?calhooks=<deployment>``).

Kept here, below both the web process and the workers: ``service.subscriptions.ownership``
makes and judges the mark (see it for why the mark lives in the URL); the workers'
reconciliation reads it to tell a change of this deployment's own webhook.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

MARK = "calhooks"


def owner_of(url: str) -> str | None:
    """The deployment name marked in ``url``, or ``None`` when it has no calhooks mark."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    names = [value for key, value in parse_qsl(query, keep_blank_values=True) if key == MARK]
    return names[0] if len(names) == 1 else None
