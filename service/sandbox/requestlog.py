"""The sandbox's record of every API request, so tests assert effects rather than mocks.

Each record names the tool called, the method, path, query and body, the status answered
and which credential was used — its id (``key-acme-admin``, ``client:<id>``), never the key
or secret itself. Records are appended on arrival (status filled in when answered) and
the latest ``keep`` are kept; reading is safe from any thread.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from calhooks.service.calcom.webhooks import utc_timestamp


@dataclass
class RequestRecord:
    id: str
    method: str
    path: str
    tool: str | None
    query: list[tuple[str, str]]
    body: Any
    at: str = field(default_factory=utc_timestamp)
    credential: str | None = None
    status: int | None = None
    #: The connection was closed without an answer (fault injection).
    dropped: bool = False
    #: A fault rule answered instead of the operation.
    faulted: bool = False
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "method": self.method,
            "path": self.path,
            "tool": self.tool,
            "query": [list(pair) for pair in self.query],
            "body": self.body,
            "credential": self.credential,
            "status": self.status,
            "dropped": self.dropped,
            "faulted": self.faulted,
            "duration": round(self.duration, 4),
        }


class RequestLog:
    def __init__(self, keep: int = 10_000) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self, tool: str | None = None) -> list[RequestRecord]:
        """A snapshot, oldest first; only calls of ``tool`` when given."""
        with self._lock:
            snapshot = list(self._records)
        return [r for r in snapshot if tool is None or r.tool == tool]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        return len(self._records)
