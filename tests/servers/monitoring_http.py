"""A small real HTTP server in the test process standing in for a monitoring
silence API (Alertmanager/Icinga style). It records every call (method, path,
headers, body) and answers what the test queued, or 200 with a fresh
``{"silenceID": ...}`` by default, so tests check what jarvis really sent.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """The running server, its recorded calls and the answers it will give."""

    host: str
    port: int
    calls: list[Call] = field(default_factory=list)
    replies: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, path: str = "/api/v2/silences") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def reply(self, status: int, body: str = "") -> None:
        """Queue the answer to the next call (after earlier queued ones)."""
        with self.lock:
            self.replies.append((status, body))

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.replies.clear()
            self.counter = itertools.count(1)

    def record(self, call: Call) -> tuple[int, str]:
        with self.lock:
            self.calls.append(call)
            if self.replies:
                return self.replies.pop(0)
            return 200, json.dumps({"silenceID": f"silence-{next(self.counter)}"})


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode(errors="replace") if length else ""
            status, reply = receiver.record(Call(self.command, self.path,
                                                 {k.lower(): v for k, v in self.headers.items()},
                                                 body))
            data = reply.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the recorded calls are what tests look at."""

    return Handler


@contextlib.contextmanager
def receiver_server() -> Iterator[Receiver]:
    """The receiver on a free loopback port, in a thread (for the fixture and benchmarks)."""
    receiver = Receiver("127.0.0.1", 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="monitoring-http", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def monitoring_http() -> Iterator[Receiver]:
    with receiver_server() as receiver:
        yield receiver


@pytest.fixture
def monitoring(monitoring_http: Receiver) -> Iterator[Receiver]:
    """The session receiver with no calls recorded and no answers queued."""
    monitoring_http.reset()
    yield monitoring_http
    monitoring_http.reset()
