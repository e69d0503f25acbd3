"""Whether a port can be listened on, checked before a server starts (one clear line, not a
uvicorn traceback and exit 3, when another process holds it)."""

from __future__ import annotations

import socket

from calhooks.service.cli.output import fail


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` can be listened on now, as uvicorn will (``SO_REUSEADDR``: the
    TIME_WAIT connections of a server that just stopped do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def require_free(host: str, ports: dict[str, int], hint: str) -> None:
    """Exit with one line naming every port of ``ports`` already in use."""
    taken = [f"{name} port {port}" for name, port in ports.items() if not port_free(host, port)]
    if taken:
        fail(f"{', '.join(taken)} on {host} already in use ({hint})")
