"""Noticing that a file changed: one ``stat``, compared with the last one seen.

Both the intake's secrets file and the workers' rules file are re-read only when their
stamp changes. The stamp covers a rename over the file (device and inode, as Kubernetes
swaps a mounted ConfigMap or Secret) and an edit in place (size and modification time).
"""

from __future__ import annotations

import os
from pathlib import Path

Stamp = tuple[int, int, int, int]


def file_stamp(path: Path) -> Stamp:
    """The file's stamp; ``OSError`` if it cannot be looked at."""
    info = os.stat(path)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def file_stamp_or_none(path: Path) -> Stamp | None:
    """The file's stamp, or ``None`` when it is missing or cannot be looked at."""
    try:
        return file_stamp(path)
    except OSError:
        return None
