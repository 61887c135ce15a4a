"""The URL source against a real HTTP server on loopback: gists, raw URLs and hostile answers.

Each hostile case goes through the whole chain the bot uses (``fetch`` then
``clipboard.document.load`` then ``normalize_design``) and must end in one
clear line, without the server being asked for anything that was refused.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from bot.sources import Fetched, fetch
from bot.sources import url as url_source
from bot.sources.url import shown
from clipboard import document
from clipboard.config import Config, load
from clipboard.errors import ClipboardError, JarvisError, SourceError
from clipboard.validate import normalize_design
from tests.aio import bot_in_thread, failure_while_ticking, say_until
from tests.servers.http_gist import GIST_ID, SEED, SEED_INSTANCE, GistServer, python_object
from tests.site import CORE_PIPELINES

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
    assert fetched.source == shown(gist_server.gist_raw_url(GIST_ID, "loki.yaml"))
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
    ("/to-metadata", r"^refused host 169\.254\.169\.254: it resolves to 169\.254\.169\.254, a link-local "
                     r"address \(not in sources\.url\.allow_addresses\), redirected from http://127"),
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
