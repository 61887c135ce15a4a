"""A real HTTP server on loopback, in the test process, playing the GitHub gist API and raw hosts.

Standard library only (``ThreadingHTTPServer``). It serves the seed design as a
gist (``/api/gists/<id>``, so ``sources.url.gist_api`` points at
``<url>/api``) and as raw YAML, plus one route per hostile case a URL source
must survive: huge bodies (declared and undeclared), a YAML alias bomb, a
python-object tag, a non-mapping document, redirect loops and chains,
redirects to private addresses and other hosts, a server that never answers,
one that drips a byte at a time, and a compressed body. Every request path is
recorded, so a test can prove a refused hop was never requested.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# The seed design from DESIGN.md, byte for byte as posted.
SEED = (Path(__file__).parents[1] / "data" / "seed.yaml").read_text()

# What ``normalize_design`` makes of the seed's instance (provider lower-cased, nothing else).
SEED_INSTANCE = {
    "hostname": "loki", "fqdn": "loki.websages.com", "provider": "linode", "guestid": "Debian 6",
    "datacenter": "Atlanta", "size": 512, "gitosis-admin": "gitosis@example.com:gitosis-admin.git",
    "sshpubkey": "ssh-dss AAAA... user@host",
}

ALIAS_BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
instance: {hostname: loki, bomb: *g}
"""


def python_object(marker: str) -> str:
    """A design that would run ``touch marker`` if loaded with an unsafe loader."""
    return f"instance: !!python/object/apply:os.system ['touch {marker}']\n"


NOT_A_MAPPING = "- instance\n- hostname: loki\n"
TEN_MB = 10 * 1024 * 1024
GIST_ID = "912450"
GIST_REVISION = "3f2b1a0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a"


@dataclass
class GistServer:
    """The running server: its base URL, the gist API base, and what it was asked."""

    host: str
    port: int
    stop: threading.Event
    requests: list[str] = field(default_factory=list)
    raw: dict[str, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def raw_url(self, name: str) -> str:
        return f"{self.url}/raw/{name}"

    def gist_raw_url(self, ident: str, name: str) -> str:
        return f"{self.url}/gist-raw/{ident}/raw/{GIST_REVISION}/{name}"

    def gists(self) -> dict[str, dict[str, Any]]:
        """Gist API answers by id: the seed, and the shapes a gist can take."""
        def entry(ident: str, name: str, content: str | None, truncated: bool = False,
                  raw_url: str | None = None) -> dict[str, Any]:
            value: dict[str, Any] = {"filename": name, "type": "text/plain", "truncated": truncated,
                                     "raw_url": raw_url or self.gist_raw_url(ident, name)}
            if content is not None:
                value["content"] = content
                value["size"] = len(content.encode())
            return value

        def gist(ident: str, *files: dict[str, Any]) -> dict[str, Any]:
            return {"id": ident, "html_url": f"https://gist.github.com/{ident}",
                    "files": {f["filename"]: f for f in files}}

        return {
            GIST_ID: gist(GIST_ID, entry(GIST_ID, "loki.yaml", SEED)),
            "a1": gist("a1", entry("a1", "README.md", "# loki\n"), entry("a1", "loki.yml", SEED)),
            "a2": gist("a2", entry("a2", "loki.yaml", SEED), entry("a2", "thor.yml", SEED),
                       entry("a2", "README.md", "x")),
            "a3": gist("a3", entry("a3", "loki.yaml", SEED[:20], truncated=True)),
            "a4": gist("a4", entry("a4", "README.md", "x"), entry("a4", "notes.txt", "y")),
            "a5": gist("a5", entry("a5", "loki.yaml", None, truncated=True,
                                   raw_url="https://evil.example.com/loki.yaml")),
            "b0": gist("b0", entry("b0", "bomb.yaml", ALIAS_BOMB)),
            "b1": gist("b1", entry("b1", "big.yaml", "a: " + "x" * (300 * 1024) + "\n")),
        }


class _Handler(BaseHTTPRequestHandler):
    server_version = "gist-test"
    state: GistServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded paths are what tests look at."""

    def do_GET(self) -> None:
        state = self.state
        state.requests.append(self.path)
        path = self.path.split("?", 1)[0]
        try:
            self._route(state, path)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client stopped reading (a size cap): exactly what some tests want

    def _route(self, state: GistServer, path: str) -> None:
        if path.startswith("/api/gists/"):
            gist = state.gists().get(path.rsplit("/", 1)[-1])
            if gist is None:
                return self._send(404, json.dumps({"message": "Not Found"}).encode(), "application/json")
            return self._send(200, json.dumps(gist).encode(), "application/json")
        if path.startswith("/gist-raw/"):
            return self._send(200, SEED.encode())
        if path.startswith("/raw/") and path[5:] in state.raw:
            return self._send(200, state.raw[path[5:]])
        if path.startswith("/chain/"):
            hops = int(path.rsplit("/", 1)[-1])
            return self._redirect(f"/chain/{hops - 1}" if hops > 0 else "/raw/seed.yaml")
        redirects = {
            "/loop": "/loop",
            "/loop-a": "/loop-b",
            "/loop-b": "/loop-a",
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-private": "http://10.1.2.3/seed.yaml",
            "/to-loopback2": f"http://127.0.0.2:{state.port}/raw/seed.yaml",
            "/to-evil": "https://evil.example.com/seed.yaml",
        }
        if path in redirects:
            return self._redirect(redirects[path])
        handlers = {"/big": self._big_declared, "/big-stream": self._big_undeclared,
                    "/hang": self._hang, "/drip": self._drip, "/gzip": self._gzip}
        if path in handlers:
            return handlers[path]()
        self._send(404, b"not found\n")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _big_declared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(TEN_MB))
        self.end_headers()
        self._write_big()

    def _big_undeclared(self) -> None:
        """10 MB with no length (HTTP/1.0, ends at close): only a streaming cap stops it."""
        self.send_response(200)
        self.end_headers()
        self._write_big()

    def _write_big(self) -> None:
        block = b"a: " + b"x" * 65533 + b"\n"
        for _ in range(TEN_MB // len(block)):
            self.wfile.write(block)

    def _hang(self) -> None:
        """Accept the request and never answer (until the session ends)."""
        self.state.stop.wait(120)

    def _drip(self) -> None:
        """Answer, then send one byte every 50 ms forever: each read succeeds, the whole never ends."""
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"instance:\n  hostname: loki\n  x: ")
        while not self.state.stop.wait(0.05):
            self.wfile.write(b"x")
            self.wfile.flush()

    def _gzip(self) -> None:
        import gzip
        body = gzip.compress(b"a: " + b"0" * (20 * 1024 * 1024) + b"\n")
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def gist_server() -> Iterator[GistServer]:
    stop = threading.Event()
    handler = type("Handler", (_Handler,), {})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    state = GistServer(host="127.0.0.1", port=httpd.server_address[1], stop=stop)
    state.raw.update({
        "seed.yaml": SEED.encode(),
        "bomb.yaml": ALIAS_BOMB.encode(),
        "list.yaml": NOT_A_MAPPING.encode(),
    })
    handler.state = state
    thread = threading.Thread(target=httpd.serve_forever, name="gist-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
