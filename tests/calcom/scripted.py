"""A scripted stand-in for Cal.com used by the client's retry tests.

Each request pops the next scripted answer (status, body, headers, delay) for its path, or
gets a default 200 envelope; every request is recorded. The stateful sandbox replaces this
once it exists; the retry tests only need precise control over each answer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any


class ScriptedCalcom:
    def __init__(self) -> None:
        self.script: dict[str, deque[Answer]] = defaultdict(deque)
        self.requests: list[Recorded] = []
        self.app = Starlette(
            routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PATCH", "DELETE"])]
        )

    def answer(self, path: str, *answers: Answer) -> None:
        self.script[path].extend(answers)

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        self.requests.append(
            Recorded(
                request.method,
                request.url.path,
                list(request.query_params.multi_items()),
                dict(request.headers),
                await request.json() if raw else None,
            )
        )
        queue = self.script.get(request.url.path)
        answer = queue.popleft() if queue else Answer(body={"status": "success", "data": {}})
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
