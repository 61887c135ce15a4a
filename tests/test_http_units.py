"""The HTTP API's pure parts, in the fast tier: token hashing and bearer headers, the
paging cursor (against SQLite in memory, with the store's own schema), the deploy
request's checks, read modes, the OpenAPI filter, scrubbing of answers and the
metrics' notify wrap."""
from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import generate_latest

from bot.http import shapes
from bot.http.actions import deploy_command
from bot.http.auth import Tokens, digest
from bot.http.context import CONTEXT
from bot.http.metrics import Metrics, Snapshot
from bot.http.openapi import document
from bot.http.requests import check_read
from clipboard import config as config_mod
from clipboard import redact
from clipboard.errors import JarvisError, Unauthenticated
from clipboard.records import Deployment, Event, EventKind, State
from clipboard.settings_http import TokenSettings
from clipboard.slots import Slots
from clipboard.store_queries import listing, page_of
from clipboard.store_schema import SCHEMA


def configured(user: dict[str, Any]) -> config_mod.Config:
    return config_mod.Config(config_mod.merge(config_mod.defaults(), user))


# -- tokens ---------------------------------------------------------------------------------
def test_a_token_is_kept_as_its_sha256_and_named_by_it() -> None:
    assert digest("s3cret") == hashlib.sha256(b"s3cret").hexdigest()
    tokens = Tokens({"ci": TokenSettings(digest("s3cret").upper(), None),
                     "other": TokenSettings(digest("other"), None)})
    assert tokens.name_of("s3cret") == "ci"
    assert tokens.name_of("s3cre") is None
    assert tokens.identity("Bearer s3cret") == "http:ci"
    assert tokens.identity("bearer   s3cret ") == "http:ci"
    for header in (None, "", "Bearer", "Bearer ", "Basic s3cret", "s3cret"):
        assert tokens.identity(header) is None, header


def test_a_token_named_by_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_TEST_TOKEN", "from-the-env")
    monkeypatch.delenv("JARVIS_TEST_EMPTY", raising=False)
    tokens = Tokens({"ci": TokenSettings(None, "JARVIS_TEST_TOKEN"),
                     "gone": TokenSettings(None, "JARVIS_TEST_EMPTY")})
    assert tokens.identity("Bearer from-the-env") == "http:ci"
    assert "gone" not in tokens.digests


# -- paging ---------------------------------------------------------------------------------
def row(number: int) -> Deployment:
    return Deployment(number, f"h{number}", "", "deploy", (), State.READY, 0.0)


def test_the_cursor_is_the_last_id_shown_when_more_follow() -> None:
    rows = [row(n) for n in (9, 7, 4)]
    assert page_of(rows, 2) == (rows[:2], 7)
    assert page_of(rows[:2], 2) == (rows[:2], None)
    assert page_of([], 5) == ([], None)


def test_paging_by_cursor_visits_each_deployment_once_newest_first() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    for n in range(1, 13):
        conn.execute("INSERT INTO deployments (hostname, cluster, source, pipeline, steps,"
                     " state, created_at) VALUES (?,?,?,?,?,?,?)",
                     (f"web{n % 3}", "shop#1" if n % 2 else "shop#2", "x", "deploy", "[]",
                      "ready" if n % 4 else "failed", 0.0))

    def walk(**filters: Any) -> list[int]:
        seen: list[int] = []
        before = None
        while True:
            query, params = listing(filters.get("host"), filters.get("cluster"),
                                    filters.get("state"), before, 5)
            ids = [r[0] for r in conn.execute(query, params).fetchall()]
            page, cursor = page_of([row(i) for i in ids], 5)
            seen += [d.id for d in page]
            if cursor is None:
                return seen
            before = cursor

    assert walk() == list(range(12, 0, -1))
    assert walk(host="web1") == [10, 7, 4, 1]
    assert walk(cluster="shop#2") == [12, 10, 8, 6, 4, 2]
    assert walk(cluster="shop") == list(range(12, 0, -1))
    assert walk(state="failed", cluster="shop") == [12, 8, 4]


# -- deploy requests ------------------------------------------------------------------------
def test_a_deploy_request_becomes_the_chat_command() -> None:
    command = deploy_command({"source": " https://gist.github.com/a/1 ", "pipeline": "slow",
                              "force": True, "dry_run": True})
    assert (command.name, command.args, command.options, command.flags) == (
        "deploy", ["https://gist.github.com/a/1"], {"pipeline": "slow"}, {"force", "dry-run"})
    assert deploy_command({"design": "instance: {}"}).args == []


@pytest.mark.parametrize(("body", "says"), [
    ({}, 'either "source"'),
    ({"source": "x", "design": "y"}, 'either "source"'),
    ({"source": "x", "hostname": "y"}, "does not take hostname"),
    ({"source": ""}, '"source" must be a non-empty string'),
    ({"design": ["a"]}, '"design" must be a non-empty string'),
    ({"source": "x", "pipeline": 3}, '"pipeline" must be a non-empty string'),
    ({"source": "x", "force": "yes"}, '"force" must be true or false'),
])
def test_a_bad_deploy_request_is_refused_saying_why(body: dict[str, Any], says: str) -> None:
    with pytest.raises(JarvisError, match=says):
        deploy_command(body)


# -- read modes -----------------------------------------------------------------------------
def request_with(read: str, authorization: str | None) -> web.Request:
    app = web.Application()
    app[CONTEXT] = SimpleNamespace(
        config=configured({"http": {"read": read}}),
        tokens=Tokens({"ci": TokenSettings(digest("t"), None)}))
    headers = {"Authorization": authorization} if authorization else {}
    return make_mocked_request("GET", "/api/v1/locks", headers=headers, app=app)


def test_reads_need_a_token_only_when_configured() -> None:
    check_read(request_with("open", None))
    check_read(request_with("token", "Bearer t"))
    with pytest.raises(Unauthenticated, match="a bearer token is needed"):
        check_read(request_with("token", None))
    with pytest.raises(Unauthenticated, match="not one jarvis knows"):
        check_read(request_with("token", "Bearer nope"))


# -- openapi --------------------------------------------------------------------------------
def test_the_document_claims_only_the_routes_served() -> None:
    full = document()
    assert "/api/v1/events" in full["paths"] and "post" in full["paths"]["/api/v1/deployments"]
    some = document({("/api/v1/deployments", "get"), ("/api/v1/locks", "get")})
    assert some["paths"] == {"/api/v1/deployments": {"get": full["paths"]["/api/v1/deployments"]
                                                     ["get"]},
                             "/api/v1/locks": full["paths"]["/api/v1/locks"]}


# -- answers --------------------------------------------------------------------------------
def test_every_string_of_an_answer_is_scrubbed_keys_too() -> None:
    scrub = redact.Scrubber({"Pa55word-xyz"}).scrub
    answer = {"error": "login as root:Pa55word-xyz refused", "n": 3, "ok": True,
              "lines": ["a", ("Pa55word-xyz",)], "Pa55word-xyz": None,
              "url": "https://bob:hunter2@example.com/"}
    assert shapes.scrubbed(answer, scrub) == {
        "error": "login as root:*** refused", "n": 3, "ok": True, "lines": ["a", ["***"]],
        "***": None, "url": "https://bob:***@example.com/"}
    clean = {"error": None, "lines": ["login refused", "see https://example.com/"]}
    assert shapes.scrubbed(clean, scrub) is clean  # nothing to hide: answered as it is


# -- metrics --------------------------------------------------------------------------------
def test_step_durations_are_observed_after_the_wrapped_callback() -> None:
    heard: list[EventKind] = []
    metrics = Metrics({"irc": SimpleNamespace(reconnects=2)})
    notify = metrics.wrap(lambda event: heard.append(event.kind))
    d = row(1)
    notify(Event(EventKind.STEP_OK, d, step="core:noop", index=1, total=1, seconds=0.02))
    notify(Event(EventKind.UNDO_FAILED, d, step="t:undo", index=1, seconds=3.0))
    notify(Event(EventKind.READY, d))
    assert heard == [EventKind.STEP_OK, EventKind.UNDO_FAILED, EventKind.READY]
    text = metrics.observe(Snapshot(by_state={"ready": 4}, in_flight={"core:noop": 2},
                                    reconnects=metrics.reconnects(), webhooks=(5, 1))).decode()
    for line in (('jarvis_step_duration_seconds_count{kind="step",outcome="ok",step="core:noop"} '
                 "1.0"),
                 ('jarvis_step_duration_seconds_bucket{kind="undo",le="5.0",outcome="failed",'
                 'step="t:undo"} 1.0'),
                 'jarvis_deployments{state="ready"} 4.0', 'jarvis_deployments{state="failed"} 0.0',
                 'jarvis_steps_in_flight{step="core:noop"} 2.0',
                 'jarvis_chat_reconnects_total{adapter="irc"} 2.0',
                 "jarvis_webhook_deliveries_total 5.0", "jarvis_webhook_failures_total 1.0"):
        assert line in text.splitlines(), line
    other = Metrics({})
    assert b"core:noop" not in generate_latest(other.registry)  # a registry per jarvis


def test_slots_count_the_steps_waiting_for_one() -> None:
    async def go() -> None:
        slots = Slots(configured({"runner": {"max_concurrent_steps": 1}}))
        held = slots.slot("t:one", None)
        await held.__aenter__()
        waiter = asyncio.create_task(slots.slot("t:two", None).__aenter__())
        await asyncio.sleep(0)
        assert (slots.in_flight["t:one"], slots.waiting["t:two"]) == (1, 1)
        await held.__aexit__()
        await waiter
        assert (slots.in_flight["t:two"], slots.waiting["t:two"]) == (1, 0)
    asyncio.run(go())
