"""What the machine gives this process: the memory limit that sizes the intake's buffers.

``memory_limit()`` is the cgroup's limit - ``memory.max`` (cgroup v2) or
``memory.limit_in_bytes`` (v1), which in Kubernetes is the container's memory limit - or
``None`` when there is none. Settings that derive from it fall back to ``DEFAULT_MEMORY``.
"""

from __future__ import annotations

from pathlib import Path

#: Assumed when no cgroup limit is found: the web pod's limit in deploy/kubernetes.
DEFAULT_MEMORY = 512 * 1024 * 1024
_CGROUP_FILES = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
#: cgroup v1 reports "no limit" as a huge number (close to 2**63).
_UNLIMITED = 2**60


def memory_limit(files: tuple[Path, ...] = _CGROUP_FILES) -> int | None:
    """Bytes of memory this process' cgroup may use, or ``None`` when unlimited/unknown."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < _UNLIMITED else None
    return None
