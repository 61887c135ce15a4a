"""What the event-log tests share: fake engine events, a store and an event log over a
temporary file, a webhook receiver (an in-process aiohttp server) that checks
signatures on its own, and a wait that fails naming what never happened."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from clipboard.records import Deployment, Event, EventKind, State
from clipboard.steps import Step


def deployment(number: int = 1, hostname: str = "web1", cluster: str | None = None,
               state: State = State.RUNNING) -> Deployment:
    return Deployment(id=number, hostname=hostname, source="test", pipeline="deploy",
                      steps=(Step("t:one"), Step("t:two")), state=state,
                      created_at=time.time(), cluster=cluster)


def event(kind: EventKind, d: Deployment | None = None, **fields: Any) -> Event:
    return Event(kind, d or deployment(), **fields)


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


def expected_signature(secret: str, body: bytes) -> str:
    """GitHub's scheme, computed here on its own (not with jarvis's function)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Receiver:
    """Records each POST per path; ``refuse`` answers 503 that many times first.
    ``secrets`` names a path's own secret (``secret`` for the others)."""

    secret: str
    refuse: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    got: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    refused: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.refused < self.refuse:
            self.refused += 1
            return web.Response(status=503)
        if request.headers.get("X-Jarvis-Signature") != expected_signature(
                self.secrets.get(request.path, self.secret), body):
            self.bad.append(request.path)
            return web.Response(status=400)
        data = json.loads(body)
        if request.headers.get("X-Jarvis-Event-Id") != str(data["id"]):
            self.bad.append(f"{request.path}: event id header")
        self.got.setdefault(request.path, []).append(data)
        return web.Response(status=204)

    def ids(self, path: str) -> list[int]:
        return [data["id"] for data in self.got.get(path, [])]


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver, port: int = 0) -> AsyncIterator[int]:
    """Serve ``receiver`` on 127.0.0.1 (port 0: a free one); yields the port."""
    app = web.Application()
    app.router.add_post("/{path:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server: Any = site._server
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        await runner.cleanup()
