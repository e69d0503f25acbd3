"""Keeping the sandbox a laptop toy: loopback binding and loopback deliveries by default.

The sandbox's admin routes need no key and it POSTs deliveries to whatever subscriber URL
a webhook names. So ``calhooks sandbox`` (and ``calhooks dev``) bind to a non-loopback
address only when asked explicitly, with a warning, and deliveries go to loopback
addresses only unless allowed.

A host counts as loopback when it is a loopback IP literal (``127.0.0.0/8``, ``::1``) or
``localhost`` / ``*.localhost`` (RFC 6761). Other names are not resolved: a name that
happens to point at 127.0.0.1 needs the same explicit allowance as a remote host, and no
DNS answer can turn a refused URL into an accepted one.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

ALLOW_REMOTE_FLAG = "--allow-remote"
ALLOW_REMOTE_DELIVERIES_FLAG = "--allow-remote-deliveries"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an IP literal or a name, no port) surely means this machine."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def delivery_refusal(url: str) -> str | None:
    """Why a delivery to ``url`` is refused without the allowance, or ``None`` if it may go."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    if is_loopback_host(host):
        return None
    return (
        f"refused: the sandbox delivers to loopback addresses only, not {host or url!r} "
        f"(start it with {ALLOW_REMOTE_DELIVERIES_FLAG} to allow other hosts)"
    )


def bind_warning(host: str, port: int) -> str:
    """What to print when the sandbox is bound to a non-loopback address on purpose."""
    return (
        f"warning: the sandbox listens on {host}:{port}, beyond this machine. Its admin "
        "routes (/_sandbox/...) need no key, its API keys are published, and it POSTs "
        "deliveries to the URLs webhooks name: anyone who can reach it can use all of that."
    )


def bind_refusal(host: str) -> str:
    """The error for a non-loopback bind without the explicit flag."""
    return (
        f"refusing to bind the sandbox to {host}: its admin routes need no key and it "
        f"sends deliveries on request; pass {ALLOW_REMOTE_FLAG} if you mean it"
    )
