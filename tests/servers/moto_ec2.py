"""moto's EC2 API on loopback, for libcloud's real EC2 driver.

Stock moto 5.2 disagrees with libcloud on three points (see
shared/notes/test-servers.md, section 6), so the server runs moto's own WSGI
app behind ``EC2Shim``, a small test-side middleware; jarvis and libcloud run
unchanged:

1. moto answers with the XML namespace ``.../doc/2016-11-15`` (no final slash)
   while libcloud looks for exactly ``http://ec2.amazonaws.com/doc/2016-11-15/``
   as real AWS sends it: without the fix every list is silently empty.
2. libcloud sends 0-based ``ResourceId.0`` / ``Tag.0.Key`` (AWS tolerates it,
   moto answers 400): shifted to 1-based.
3. moto's ``RebootInstances`` (and ``CreateTags``/``DeleteTags``) answers lack
   ``<return>true</return>``, so libcloud reports False for a success.

The server runs in its own process (``python -m tests.servers.moto_ec2 PORT``)
started by a session fixture, listening on 127.0.0.1 only and stopped by its
PID at the end of the session. ``moto_ec2`` resets moto's state before each
test that uses it.
"""
from __future__ import annotations

import json
import re
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from tests.servers.process import ServerProcess, free_port

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
_NAMESPACE_RE = re.compile(rb'xmlns="http://ec2\.amazonaws\.com/doc/[^"]*"')
# Actions whose AWS answer carries <return>true</return> and moto's does not.
RETURNS_TRUE = {"RebootInstances", "CreateTags", "DeleteTags"}
_INDEXED = re.compile(r"^(.*?\b(?:ResourceId|Tag))\.(\d+)(.*)$")
REPO = Path(__file__).resolve().parents[2]

StartResponse = Callable[..., Any]


def shift_indexes(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Renumber 0-based ``ResourceId.N`` / ``Tag.N`` lists to 1-based (moto wants 1-based)."""
    lowest: dict[str, int] = defaultdict(lambda: 1)
    for key, _ in pairs:
        match = _INDEXED.match(key)
        if match:
            lowest[match.group(1)] = min(lowest[match.group(1)], int(match.group(2)))
    out = []
    for key, value in pairs:
        match = _INDEXED.match(key)
        if match and lowest[match.group(1)] == 0:
            key = f"{match.group(1)}.{int(match.group(2)) + 1}{match.group(3)}"
        out.append((key, value))
    return out


class EC2Shim:
    """WSGI middleware that makes moto's EC2 answers look like AWS's to libcloud."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        params = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        environ["QUERY_STRING"] = urlencode(shift_indexes(params))
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length).decode()
            form = shift_indexes(parse_qsl(body, keep_blank_values=True))
            params += form
            raw = urlencode(form).encode()
            environ["wsgi.input"] = _Body(raw)
            environ["CONTENT_LENGTH"] = str(len(raw))
        action = dict(params).get("Action", "")
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        result = self.app(environ, capture)
        try:
            body_bytes = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close:
                close()
        body_bytes = _NAMESPACE_RE.sub(f'xmlns="{NAMESPACE}"'.encode(), body_bytes)
        if action in RETURNS_TRUE and captured["status"].startswith("200") \
                and b"<return>" not in body_bytes:
            end = f"</{action}Response>".encode()
            body_bytes = body_bytes.replace(end, b"<return>true</return>" + end)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body_bytes))))
        start_response(captured["status"], headers)
        return [body_bytes]


class _Body:
    """A re-readable request body after the form was rewritten."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        chunk = self._data[self._pos:end]
        self._pos += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        newline = self._data.find(b"\n", self._pos)
        end = len(self._data) if newline < 0 else newline + 1
        if size is not None and size >= 0:
            end = min(end, self._pos + size)
        return self.read(end - self._pos)

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.readline(), b"")


@dataclass
class MotoEC2:
    """The running server: where it listens, and how to clear its state."""

    host: str
    port: int
    server: ServerProcess

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def config(self) -> dict[str, Any]:
        """The ``providers.ec2`` settings that point libcloud at this server."""
        return {"key": "AKIAJARVISTEST", "secret": "jarvis-test-secret", "region": "us-east-1",
                "host": self.host, "port": self.port, "secure": False, "signature_version": "4"}


def _ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False
    return check


@pytest.fixture(scope="session")
def moto_ec2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoEC2]:
    """One moto server for the session, on a free port of 127.0.0.1."""
    directory = tmp_path_factory.mktemp("moto")
    port = free_port()
    server = ServerProcess("moto", [sys.executable, "-m", "tests.servers.moto_ec2", str(port)],
                           log=directory / "moto.log", cwd=REPO)
    moto = MotoEC2("127.0.0.1", port, server)
    server.start(_ready(moto.url), timeout=30)
    try:
        yield moto
    finally:
        server.stop()


@pytest.fixture
def moto_ec2(moto_ec2_server: MotoEC2) -> MotoEC2:
    """The session's moto server with its state cleared for this test."""
    moto_ec2_server.reset()
    return moto_ec2_server


def serve(port: int) -> None:
    """Serve moto's WSGI app behind the shim on 127.0.0.1:port until terminated."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = EC2Shim(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    print(json.dumps({"listening": f"127.0.0.1:{port}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
