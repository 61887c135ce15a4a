"""The URL source against a real HTTP server on loopback: gists, raw URLs and hostile answers.

Each hostile case goes through the whole chain the bot uses (``fetch`` then
``clipboard.document.load`` then ``normalize_design``) and must end in one
clear line, without the server being asked for anything that was refused.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.sources import Fetched, fetch
from bot.sources import url as url_source
from clipboard import document
from clipboard.config import Config, load
from clipboard.errors import ClipboardError, JarvisError, SourceError
from clipboard.redact import shown_url
from clipboard.validate import normalize_design
from tests.aio import bot_in_thread, failure_while_ticking, say_until
from tests.servers.http_gist import (
    GIST_ID,
    SEED,
    SEED_INSTANCE,
    GistServer,
    _Handler,
    python_object,
)
from tests.servers.process import self_signed_cert
from tests.site import CORE_PIPELINES

ROOT = Path(__file__).resolve().parents[1]

def make_config(tmp_path: Path, server: GistServer, **url: Any) -> Config:
    """A config letting the URL source reach the loopback server (and nothing else private)."""
    section: dict[str, Any] = {
        "allowed_hosts": ["gist.github.com", "127.0.0.1", "127.0.0.2", "169.254.169.254", "10.1.2.3"],
        "gist_api": server.api,
        "allow_http": True,
        "allow_addresses": ["127.0.0.1"],
        "timeout": 1.5,
    }
    section.update(url)
    path = tmp_path / "jarvis.yaml"
    path.write_text(document.dump({"sources": {"url": section}}))
    return load(path, export=False)


def run(spec: str, config: Config) -> Fetched:
    return asyncio.run(fetch(spec, config))


def design_of(spec: str, config: Config) -> dict[str, Any]:
    """The whole chain the bot runs on a URL: fetch, safe load, validation."""
    fetched = run(spec, config)
    text = document.load(fetched.data, max_bytes=int(config.get("clipboard.max_bytes")),
                         max_nodes=int(config.get("clipboard.max_nodes")), what=fetched.source)
    return normalize_design(text)


def refused(spec: str, config: Config) -> str:
    """The one-line reason the chain gives for ``spec``."""
    with pytest.raises(JarvisError) as caught:
        design_of(spec, config)
    message = str(caught.value)
    assert "\n" not in message and message, message
    assert "Traceback" not in message
    return message


# --- the seed design, accepted verbatim ---

def test_gist_page_url_resolves_through_the_api(tmp_path, gist_server):
    config = make_config(tmp_path, gist_server)
    fetched = run(f"https://gist.github.com/{GIST_ID}", config)
    assert fetched.kind == "url"
    assert fetched.data == SEED.encode()
    assert fetched.sha256 == hashlib.sha256(SEED.encode()).hexdigest()
    assert fetched.source == shown_url(gist_server.gist_raw_url(GIST_ID, "loki.yaml"))
    assert f"/api/gists/{GIST_ID}" in gist_server.requests
    assert normalize_design(document.load(fetched.data))["instance"] == SEED_INSTANCE


def test_gist_page_url_with_user(tmp_path, gist_server):
    config = make_config(tmp_path, gist_server)
    assert design_of(f"https://gist.github.com/fapestniegd/{GIST_ID}/", config)["instance"] == SEED_INSTANCE


def test_raw_url_fetched_as_is(tmp_path, gist_server):
    config = make_config(tmp_path, gist_server)
    fetched = run(gist_server.raw_url("seed.yaml"), config)
    assert fetched.data == SEED.encode()
    assert fetched.source == gist_server.raw_url("seed.yaml")
    assert normalize_design(document.load(fetched.data))["instance"] == SEED_INSTANCE


def test_gist_picks_the_only_yaml_file(tmp_path, gist_server):
    config = make_config(tmp_path, gist_server)
    fetched = run("https://gist.github.com/a1", config)
    assert fetched.source.endswith("/loki.yml")
    assert fetched.data == SEED.encode()


def test_gist_truncated_file_is_fetched_from_raw_url(tmp_path, gist_server):
    config = make_config(tmp_path, gist_server)
    before = len(gist_server.requests)
    fetched = run("https://gist.github.com/a3", config)
    assert fetched.data == SEED.encode()
    assert any(p.startswith("/gist-raw/a3/") for p in gist_server.requests[before:])


def test_three_redirects_are_followed(tmp_path, gist_server):
    config = make_config(tmp_path, gist_server)
    fetched = run(f"{gist_server.url}/chain/2", config)
    assert fetched.data == SEED.encode()
    assert fetched.source == gist_server.raw_url("seed.yaml")


# --- gists that cannot be resolved ---

def test_gist_with_several_yaml_files_lists_them(tmp_path, gist_server):
    message = refused("https://gist.github.com/a2", make_config(tmp_path, gist_server))
    assert "several YAML files" in message and "loki.yaml, thor.yml" in message


def test_gist_without_yaml_file_lists_files(tmp_path, gist_server):
    message = refused("https://gist.github.com/a4", make_config(tmp_path, gist_server))
    assert "none ends in .yaml" in message and "README.md, notes.txt" in message


def test_gist_not_found(tmp_path, gist_server):
    message = refused("https://gist.github.com/deadbeef", make_config(tmp_path, gist_server))
    assert message.startswith("gist deadbeef: HTTP 404")


def test_gist_page_that_is_not_a_gist_id(tmp_path, gist_server):
    message = refused("https://gist.github.com/alice/bob/carol", make_config(tmp_path, gist_server))
    assert "not a gist page" in message


def test_gist_raw_url_on_a_host_not_allowed(tmp_path, gist_server):
    message = refused("https://gist.github.com/a5", make_config(tmp_path, gist_server))
    assert "host evil.example.com is not allowed" in message


def test_gist_over_the_size_cap(tmp_path, gist_server):
    message = refused("https://gist.github.com/b1", make_config(tmp_path, gist_server))
    assert "over the limit of 262144 bytes" in message


def test_gist_alias_bomb(tmp_path, gist_server):
    message = refused("https://gist.github.com/b0", make_config(tmp_path, gist_server))
    assert "alias bomb" in message


# --- hostile documents: rejected by the chain, one line each ---

def test_ten_megabytes_declared(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/big", make_config(tmp_path, gist_server))
    assert message == f"{gist_server.url}/big is 10485760 bytes, over the limit of 262144 bytes"


def test_ten_megabytes_streamed_stops_at_the_cap(tmp_path, gist_server):
    started = time.monotonic()
    message = refused(f"{gist_server.url}/big-stream", make_config(tmp_path, gist_server))
    assert "over the limit of 262144 bytes (stopped reading)" in message
    assert time.monotonic() - started < 5


def test_alias_bomb(tmp_path, gist_server):
    message = refused(gist_server.raw_url("bomb.yaml"), make_config(tmp_path, gist_server))
    assert "expands to more than 100000 nodes" in message


def test_python_object_tag_runs_nothing(tmp_path, gist_server):
    marker = tmp_path / "pwned"
    gist_server.raw["pyobj.yaml"] = python_object(str(marker)).encode()
    message = refused(gist_server.raw_url("pyobj.yaml"), make_config(tmp_path, gist_server))
    assert "YAML tag that is not allowed" in message
    assert not marker.exists()


def test_not_a_mapping(tmp_path, gist_server):
    message = refused(gist_server.raw_url("list.yaml"), make_config(tmp_path, gist_server))
    assert "must be a YAML mapping at the top level, not list" in message


def test_compressed_body_refused(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/gzip", make_config(tmp_path, gist_server))
    assert "gzip-compressed body" in message


# --- hostile transport ---

def test_redirect_to_itself(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/loop", make_config(tmp_path, gist_server))
    assert message.startswith("redirect loop at ")


def test_redirect_loop_between_two_urls(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/loop-a", make_config(tmp_path, gist_server))
    assert message.startswith("redirect loop at ")


def test_four_redirects_are_too_many(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/chain/3", make_config(tmp_path, gist_server))
    assert "too many redirects" in message and "more than 3" in message


def test_redirect_to_cloud_metadata_is_refused(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/to-metadata", make_config(tmp_path, gist_server))
    assert message.startswith("refused host 169.254.169.254: it resolves to 169.254.169.254, "
                              "a link-local address")


def test_redirect_to_private_network_is_refused(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/to-private", make_config(tmp_path, gist_server))
    assert "10.1.2.3, a private address" in message


def test_redirect_to_other_loopback_address_is_refused(tmp_path, gist_server):
    """Only 127.0.0.1 is allowed; 127.0.0.2 (same machine) is refused before connecting."""
    before = len(gist_server.requests)
    message = refused(f"{gist_server.url}/to-loopback2", make_config(tmp_path, gist_server))
    assert "127.0.0.2, a loopback address" in message
    assert gist_server.requests[before:] == ["/to-loopback2"]


def test_redirect_to_host_not_allowed(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/to-evil", make_config(tmp_path, gist_server))
    assert "host evil.example.com is not allowed" in message


def test_server_dripping_forever_hits_the_deadline(tmp_path, gist_server):
    started = time.monotonic()
    message = refused(f"{gist_server.url}/drip", make_config(tmp_path, gist_server))
    assert message == f"timed out after 1.5s reading {gist_server.url}/drip"
    assert time.monotonic() - started < 4


def test_not_found(tmp_path, gist_server):
    message = refused(gist_server.raw_url("nothing.yaml"), make_config(tmp_path, gist_server))
    assert "HTTP 404 (not found)" in message


# --- refused before any traffic ---

def test_host_not_allowed(tmp_path, gist_server):
    message = refused("https://evil.example.com/loki.yaml", make_config(tmp_path, gist_server))
    assert message.startswith("refused https://evil.example.com/loki.yaml: host evil.example.com is not allowed")


def test_plain_http_refused_by_default(tmp_path, gist_server):
    before = len(gist_server.requests)
    message = refused(gist_server.raw_url("seed.yaml"), make_config(tmp_path, gist_server, allow_http=False))
    assert "plain http:// is not allowed" in message
    assert gist_server.requests[before:] == []


def test_loopback_refused_unless_allowed(tmp_path, gist_server):
    before = len(gist_server.requests)
    message = refused(gist_server.raw_url("seed.yaml"), make_config(tmp_path, gist_server, allow_addresses=[]))
    assert "it resolves to 127.0.0.1, a loopback address" in message
    assert gist_server.requests[before:] == []


def test_host_name_is_resolved_and_checked(tmp_path, gist_server):
    """A name (not a literal address) that resolves to loopback is refused just the same."""
    config = make_config(tmp_path, gist_server, allowed_hosts=["localhost"], allow_addresses=[])
    message = refused(f"http://localhost:{gist_server.port}/raw/seed.yaml", config)
    assert message.startswith("refused host localhost: it resolves to ")
    assert "a loopback address" in message


def test_credentials_in_url_refused_and_not_echoed(tmp_path, gist_server):
    message = refused(f"http://user:hunter2@127.0.0.1:{gist_server.port}/raw/seed.yaml",
                      make_config(tmp_path, gist_server))
    assert "credentials in URLs are not accepted" in message
    assert "hunter2" not in message


def test_query_string_not_echoed(tmp_path, gist_server):
    message = refused(f"{gist_server.url}/raw/nothing.yaml?token=s3cr3t", make_config(tmp_path, gist_server))
    assert "s3cr3t" not in message


def test_unsupported_scheme(tmp_path, gist_server):
    with pytest.raises(SourceError, match="only https:// URLs"):
        asyncio.run(url_source.fetch("ftp://127.0.0.1/seed.yaml", make_config(tmp_path, gist_server)))


def test_defaults_allow_only_public_gist_hosts():
    config = load(None, export=False)
    assert config.get("sources.url.allowed_hosts") == [
        "gist.github.com", "api.github.com", "gist.githubusercontent.com"]
    assert config.get("sources.url.max_bytes") == 262144
    assert config.get("sources.url.max_redirects") == 3
    with pytest.raises(SourceError, match="host 127.0.0.1 is not allowed"):
        run("https://127.0.0.1/seed.yaml", config)


def test_server_that_never_answers_times_out_without_blocking_the_loop(tmp_path, gist_server):
    """While the fetch waits, the event loop keeps ticking (the bot keeps serving)."""
    config = make_config(tmp_path, gist_server)
    started = time.monotonic()
    ticks, error = failure_while_ticking(lambda: fetch(f"{gist_server.url}/hang", config))
    assert isinstance(error, SourceError)
    assert str(error) == f"timed out after 1.5s fetching {gist_server.url}/hang"
    assert ticks >= 10 and time.monotonic() - started < 4


def test_errors_are_source_or_clipboard_errors(tmp_path, gist_server):
    config = make_config(tmp_path, gist_server)
    with pytest.raises(SourceError):
        run(f"{gist_server.url}/loop", config)
    with pytest.raises(ClipboardError):
        design_of(gist_server.raw_url("list.yaml"), config)


# --- end to end through the bot: the chat interface, the engine, the store ---

@pytest.fixture(scope="module")
def url_bot(tmp_path_factory: pytest.TempPathFactory, gist_server: GistServer):
    """A real bot (fork server, worker processes, SQLite) whose URL source reaches the gist server."""
    tmp = tmp_path_factory.mktemp("url-bot")
    path = tmp / "jarvis.yaml"
    path.write_text(document.dump({
        "store": {"path": str(tmp / "jarvis.db")},
        "sources": {"url": {
            "allowed_hosts": ["gist.github.com", "127.0.0.1", "169.254.169.254"],
            "gist_api": gist_server.api, "allow_http": True, "allow_addresses": ["127.0.0.1"],
            "timeout": 1.5}},
        "pipelines": CORE_PIPELINES,
    }))
    with bot_in_thread(load(path)) as (loop, bot):
        yield loop, bot, tmp


def say(url_bot, text: str, pattern: str, timeout: float = 30) -> list[str]:
    loop, bot, _ = url_bot
    return say_until(loop, bot, text, pattern, timeout)


def test_bot_deploys_the_seed_from_a_gist_and_history_shows_source_and_hash(url_bot, gist_server):
    loop, bot, _ = url_bot
    say(url_bot, f"jarvis: deploy https://gist.github.com/{GIST_ID}",
        r"^loki: deployment #\d+ started: pipeline deploy, 3 steps$")
    loop.run(bot.expect(r"^loki: ready in \S+ \(3 steps\)$"))
    say(url_bot, f"jarvis: deploy {gist_server.raw_url('seed.yaml')}", r"^loki: deployment #\d+ started")
    loop.run(bot.expect(r"^loki: ready in "))
    lines = say(url_bot, "history loki", r"^#\d+ .*from url http://127\.0\.0\.1:\d+/gist-raw/")
    digest = hashlib.sha256(SEED.encode()).hexdigest()[:16]
    history = [line for line in bot.seen if line.startswith("#")][-2:]
    assert f"from url {gist_server.raw_url('seed.yaml')} sha256:{digest}" in history[0]
    assert f"from url {gist_server.gist_raw_url(GIST_ID, 'loki.yaml')} sha256:{digest}" in lines[-1]


HOSTILE_URLS = [
    ("/big", r"is 10485760 bytes, over the limit of 262144 bytes$"),
    ("/big-stream", r"over the limit of 262144 bytes \(stopped reading\)$"),
    ("/raw/bomb.yaml", r"expands to more than 100000 nodes \(an alias bomb"),
    ("/raw/pyobj.yaml", r"uses a YAML tag that is not allowed"),
    ("/raw/list.yaml", r"must be a YAML mapping at the top level, not list$"),
    ("/loop-a", r"^redirect loop at "),
    ("/to-metadata", (r"^refused host 169\.254\.169\.254: it resolves to 169\.254\.169\.254, a link-local "
                      r"address \(not in sources\.url\.allow_addresses\), redirected from http://127")),
    ("/hang", r"^timed out after 1\.5s fetching "),
]


def test_bot_answers_each_hostile_url_with_one_line_and_runs_nothing(url_bot, gist_server):
    loop, bot, tmp = url_bot
    marker = tmp / "pwned"
    gist_server.raw["pyobj.yaml"] = python_object(str(marker)).encode()
    before = len(loop.run(bot.bot.store.history("loki")))
    specs = [(gist_server.url + path, pattern) for path, pattern in HOSTILE_URLS]
    specs += [("https://evil.example.com/loki.yaml", r"host evil\.example\.com is not allowed"),
              ("https://gist.github.com/a2", r"several YAML files, say which .*loki\.yaml, thor\.yml$")]
    for spec, pattern in specs:
        assert len(say(url_bot, f"jarvis: deploy {spec}", pattern)) == 1, spec
        assert say(url_bot, "history thor", r"^thor: never deployed$") == ["thor: never deployed"]
    assert len(loop.run(bot.bot.store.history("loki"))) == before
    assert not marker.exists()
    say(url_bot, f"deploy https://gist.github.com/{GIST_ID}", r"^loki: deployment #\d+ started")
    loop.run(bot.expect(r"^loki: ready in "))


# --- one wall-clock deadline over the whole fetch, however the server drips ---

@dataclass
class RawServer:
    """A real socket server on loopback speaking just enough HTTP to misbehave:
    ``/drip-headers`` sends a status line, then one header byte a second, forever (every
    read succeeds, so only a deadline over the whole fetch ends it); ``/bad-header``
    answers the seed with a header line that has no colon. ``gone`` records when each
    dripped-to client closed its connection."""

    port: int
    gone: list[float] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def raw_server() -> Iterator[RawServer]:
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    state = RawServer(port=listener.getsockname()[1])

    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        while not stop.is_set():
            if select.select([conn], [], [], 1.0)[0]:
                if not conn.recv(1024):      # the client shut the connection down
                    state.gone.append(time.monotonic())
                    return
                continue
            conn.sendall(b"a")

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(65536)
                if request.startswith(b"GET /drip-headers "):
                    drip(conn)
                elif request.startswith(b"GET /bad-header"):
                    body = SEED.encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nthis line has no colon\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), name="raw-client", daemon=True).start()

    thread = threading.Thread(target=accept, name="raw-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing logged a traceback, and urllib3 said nothing over a line."""
    for record in caplog.records:
        assert not record.exc_info and not record.exc_text, record.getMessage()
        assert "\n" not in record.getMessage(), record.getMessage()


def test_server_dripping_header_bytes_fails_at_the_deadline(tmp_path, gist_server, raw_server,
                                                            caplog):
    """One header byte a second never trips a per-read timeout; the whole fetch still
    ends at its 2.5 s, and the fetch thread's connection is closed then too."""
    config = make_config(tmp_path, gist_server, timeout=2.5)
    url = raw_server.url("/drip-headers")
    before = len(raw_server.gone)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    message = refused(url, config)
    took = time.monotonic() - started
    assert message == f"timed out after 2.5s fetching {url}"
    assert 2.5 <= took < 3.5, took
    while len(raw_server.gone) == before and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert len(raw_server.gone) == before + 1, "the fetch thread still holds its connection"
    assert raw_server.gone[-1] - started < 3.5
    quiet(caplog)


def test_malformed_header_is_logged_on_one_line_without_traceback(tmp_path, gist_server, raw_server,
                                                                 caplog):
    caplog.set_level(logging.DEBUG)
    url = raw_server.url("/bad-header") + "?token=s3cr3t"
    try:
        run(url, make_config(tmp_path, gist_server))
    except SourceError as exc:
        assert "\n" not in str(exc)
    warned = [r for r in caplog.records if r.name == "urllib3.connection"]
    assert warned and warned[0].getMessage().startswith(
        f"Failed to parse headers (url={raw_server.url('/bad-header')}?…)")
    assert "s3cr3t" not in caplog.text
    quiet(caplog)


def test_bot_answers_a_dripping_server_at_the_deadline_in_one_line(url_bot, raw_server, caplog):
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    url = raw_server.url("/drip-headers")
    lines = say(url_bot, f"jarvis: deploy {url}", r"^timed out after 1\.5s fetching ")
    assert lines == [f"timed out after 1.5s fetching {url}"]
    assert time.monotonic() - started < 2.5
    quiet(caplog)


# --- gist API answers of any shape: one line each ---

MALFORMED_GISTS = [
    ("d1", b"[" * 100000 + b"]" * 100000, "the gist API answer for d1 is nested too deeply to be a gist"),
    ("d2", b'{"files": ' + b'{"a": ' * 100000 + b"1" + b"}" * 100001,
     "the gist API answer for d2 is nested too deeply to be a gist"),
    ("d3", b"<html>rate limited</html>", "the gist API answer for d3 is not JSON"),
    ("d4", b"\xff\xfe\x00garbage", "the gist API answer for d4 is not JSON"),
    ("d5", b"[1, 2]", "the gist API answer for d5 is a JSON array, not an object"),
    ("d6", b'{"files": ["loki.yaml"]}', "the gist API answer for d6 has files as a JSON array, not an object"),
    ("d7", b'{"id": "d7"}', "the gist API answer for d7 has no files"),
    ("d8", b'{"files": null}', "the gist API answer for d8 has no files"),
    ("d9", b'{"files": {"loki.yaml": "instance: {}"}}', "gist d9 has no files"),
    ("da", b'{"files": {"loki.yaml": {"content": 5, "raw_url": ["x"]}}}',
     "gist da file loki.yaml has neither content nor raw_url"),
    ("db", b'{"files": {"loki.yaml": {"content": "\\ud800"}}}', "gist db file loki.yaml is not valid text"),
    ("dc", b'{"files": {"a\\nb.txt": {}, "c\\u0000.txt": {}}}',
     "gist dc has 2 files and none ends in .yaml or .yml: a?b.txt, c?.txt"),
    ("dd", b'{"files": {"x\\r\\nPRIVMSG #ops :hi.yaml": {"raw_url": "http://127.0.0.1:1/\\n"}}}',
     None),
]


@pytest.fixture
def odd_gists(gist_server: GistServer) -> None:
    """The answers above at ``<url>/raw/gists/<id>`` (``gist_api`` is then ``<url>/raw``)."""
    for ident, body, _ in MALFORMED_GISTS:
        gist_server.raw[f"gists/{ident}"] = body


@pytest.mark.parametrize("ident, expected", [(i, e) for i, _, e in MALFORMED_GISTS],
                         ids=[i for i, _, _ in MALFORMED_GISTS])
def test_malformed_gist_api_answer_is_one_line(tmp_path, gist_server, odd_gists, ident, expected):
    config = make_config(tmp_path, gist_server, gist_api=f"{gist_server.url}/raw")
    message = refused(f"https://gist.github.com/{ident}", config)
    if expected is not None:
        assert message == expected


def test_bot_answers_a_gist_nested_too_deeply_in_one_line(tmp_path, gist_server, odd_gists, caplog):
    path = tmp_path / "jarvis.yaml"
    path.write_text(document.dump({
        "store": {"path": str(tmp_path / "jarvis.db")}, "pipelines": CORE_PIPELINES,
        "sources": {"url": {"allowed_hosts": ["gist.github.com", "127.0.0.1"],
                            "gist_api": f"{gist_server.url}/raw", "allow_http": True,
                            "allow_addresses": ["127.0.0.1"]}}}))
    caplog.set_level(logging.INFO)
    with bot_in_thread(load(path, export=False)) as (loop, bot):
        lines = say_until(loop, bot, "deploy https://gist.github.com/d1", r"nested too deeply")
    assert lines == ["the gist API answer for d1 is nested too deeply to be a gist"]
    quiet(caplog)


# --- TLS: a private CA in sources.url.ca_file, and the TLS library's own reason ---

@dataclass
class TlsGist:
    port: int
    ca_file: Path

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.port}/api"


@pytest.fixture(scope="module")
def tls_gist(tmp_path_factory: pytest.TempPathFactory, gist_server: GistServer) -> Iterator[TlsGist]:
    """The gist API over HTTPS on loopback, its certificate from a CA of the test's own
    (made by openssl, trusted by nothing on this machine)."""
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls-gist"), "gist.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = type("TlsHandler", (_Handler,), {"state": gist_server})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="tls-gist", daemon=True)
    thread.start()
    try:
        yield TlsGist(port=httpd.server_address[1], ca_file=cert)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def tls_config(tmp_path: Path, server: TlsGist, **url: Any) -> Path:
    """https only (no allow_http); the loopback address allowed as a private host must be."""
    path = tmp_path / "jarvis.yaml"
    path.write_text(document.dump({
        "store": {"path": str(tmp_path / "jarvis.db")}, "pipelines": CORE_PIPELINES,
        "sources": {"url": {"allowed_hosts": ["gist.github.com", "127.0.0.1"], "gist_api": server.api,
                            "allow_addresses": ["127.0.0.1"], "timeout": 5, **url}}}))
    return path


SELF_SIGNED = r"certificate verify failed: self[- ]signed certificate"


def test_private_ca_is_refused_with_the_tls_reason(tmp_path, tls_gist):
    message = refused(f"https://gist.github.com/{GIST_ID}", load(tls_config(tmp_path, tls_gist),
                                                                  export=False))
    assert message.startswith(f"TLS failed for {tls_gist.api}/gists/{GIST_ID}: ")
    assert re.search(SELF_SIGNED, message), message
    assert message.endswith("(a private CA can be trusted with sources.url.ca_file)")


def test_private_ca_in_ca_file_is_trusted(tmp_path, tls_gist):
    config = load(tls_config(tmp_path, tls_gist, ca_file=str(tls_gist.ca_file)), export=False)
    fetched = run(f"https://gist.github.com/{GIST_ID}", config)
    assert fetched.data == SEED.encode()


def test_ca_file_that_cannot_be_loaded_is_one_line(tmp_path, tls_gist):
    missing = tmp_path / "nope.pem"
    config = load(tls_config(tmp_path, tls_gist, ca_file=str(missing)), export=False)
    assert refused(f"https://gist.github.com/{GIST_ID}", config) == (
        f"sources.url.ca_file: cannot load {missing}: No such file or directory")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    config = load(tls_config(tmp_path, tls_gist, ca_file=str(garbage)), export=False)
    assert refused(f"https://gist.github.com/{GIST_ID}", config).startswith(
        f"sources.url.ca_file: cannot load {garbage}: ")


def test_cli_deploys_from_a_private_ca_gist_only_with_ca_file(tmp_path, tls_gist):
    env = {k: v for k, v in os.environ.items() if k != "JARVIS_CONFIG"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")

    def deploy(config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", "deploy", f"https://gist.github.com/{GIST_ID}",
                               "--dry-run", "--config", str(config)], text=True, capture_output=True,
                              env=env, cwd=ROOT, timeout=60)

    without = deploy(tls_config(tmp_path, tls_gist))
    assert without.returncode == 2 and without.stdout == ""
    assert len(without.stderr.splitlines()) == 1, without.stderr
    assert re.search(rf"^jarvis: TLS failed for .*: {SELF_SIGNED}", without.stderr), without.stderr
    trusted = deploy(tls_config(tmp_path, tls_gist, ca_file=str(tls_gist.ca_file)))
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.startswith("loki: dry run of pipeline deploy")
