"""The event log, the SSE stream and webhook watches (issue 15).

Fast tier: the log over a real store (order, the contract's shape, scrubbing,
retention, another process's events, a listener that falls behind), the filters
(Python and SQL agree), and webhook delivery to an in-process receiver that checks
each signature itself. With ``servers``: a real jarvis (worker processes) over real
HTTP — a deployment's events on the stream in order, a watcher resuming with
``Last-Event-ID``, and watches that deliver everything across a receiver outage and
a restart of jarvis.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bot.acl import Acl
from bot.app import Jarvis
from bot.http.auth import Tokens, digest
from bot.http.context import Context
from bot.http.server import HttpServer
from bot.testing import QueueAdapter
from bot.webhooks import Webhooks
from clipboard import config as config_mod
from clipboard import eventlog
from clipboard.config import Config
from clipboard.eventlog import EventLog
from clipboard.records import EventKind
from clipboard.run import Source
from clipboard.store import Store
from clipboard.store_events import EventFilter, StoredEvent
from clipboard.store_schema import SCHEMA
from tests.aio import LoopThread, bot_in_thread
from tests.engine_kit import run, write_config
from tests.event_kit import Receiver, deployment, event, receiving, until
from tests.servers.process import free_port
from tests.site import CORE_PIPELINES
from tests.sse_client import open_stream

SECRET = "hook-secret-0123456789"


def configured(tmp: Path, **http: Any) -> Config:
    return write_config(tmp, {}, http=http, notify={"webhook": {"secret": "config-secret-xyz"}})


async def opened(tmp: Path, **http: Any) -> tuple[Store, EventLog]:
    config = configured(tmp, **http)
    store = Store(config.get("store.path"))
    await store.open()
    log = EventLog(config, store, lambda _id: {"held-secret-abc"})
    await log.start()
    return store, log


# -- the log -------------------------------------------------------------------------------
def test_events_are_stored_in_order_in_the_contracts_shape_and_scrubbed(tmp_path: Path) -> None:
    async def go() -> None:
        store, log = await opened(tmp_path)
        heard = log.subscribe(EventFilter(), 100)
        d = deployment(7, "web1", "shop#1")
        log.record(event(EventKind.ACCEPTED, d))
        log.record(event(EventKind.STEP_STARTED, d, step="t:one", index=1, total=2))
        log.record(event(EventKind.STEP_FAILED, d, step="t:one", index=1, total=2,
                         seconds=0.123456,
                         error="boom: config-secret-xyz and held-secret-abc leaked"))
        await until(lambda: len(heard.items) == 3, "three events published")
        live = heard.take()
        stored, _ = await store.events_after(0)
        assert [e.data for e in stored] == [e.data for e in live]
        assert [e.kind for e in stored] == ["deploy.accepted", "step.started", "step.failed"]
        assert [e.id for e in stored] == sorted({e.id for e in stored})
        failed = json.loads(stored[2].data)
        assert next(iter(failed)) == "id" and failed["id"] == stored[2].id
        assert {k: failed[k] for k in ("kind", "hostname", "cluster", "deployment", "state",
                                       "step", "index", "total", "seconds")} == {
            "kind": "step.failed", "hostname": "web1", "cluster": "shop#1", "deployment": 7,
            "state": "running", "step": "t:one", "index": 1, "total": 2, "seconds": 0.123}
        assert "config-secret-xyz" not in failed["error"]
        assert "held-secret-abc" not in failed["error"] and "***" in failed["error"]
        await log.close()
        await store.close()
    run(go())


def test_the_log_keeps_only_the_newest_events(tmp_path: Path) -> None:
    async def go() -> None:
        store, log = await opened(tmp_path, events_kept=100)
        for n in range(150):
            log.record(event(EventKind.STEP_OK, step=f"t:{n}", index=1))
            if n % 40 == 0:
                await asyncio.sleep(0)  # several writes, as a running engine makes them
        await log.close()
        stored, _ = await store.events_after(0, limit=1000)
        assert len(stored) == 100 and stored[-1].id == 150 and stored[0].id == 51
        await store.close()
    run(go())


def test_another_processes_events_are_published_in_id_order(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A ``jarvis deploy`` beside the bot appends to the same log: the bot's listeners
    hear its events too, in id order, with nothing missing."""
    monkeypatch.setattr(eventlog, "POLL", 0.05)

    async def go() -> None:
        store, log = await opened(tmp_path)
        other_store, other = await opened(tmp_path)
        heard = log.subscribe(EventFilter(), 100)
        other.record(event(EventKind.ACCEPTED, deployment(2, "db1")))
        other.record(event(EventKind.STEP_STARTED, deployment(2, "db1"), step="t:one", index=1))
        await until(lambda: len(heard.items) == 2, "the other process's events, by polling")
        other.record(event(EventKind.STEP_OK, deployment(2, "db1"), step="t:one", index=1))
        await other.close()
        log.record(event(EventKind.ACCEPTED, deployment(1, "web1")))
        await until(lambda: len(heard.items) == 4, "both processes' events")
        assert [e.id for e in heard.take()] == [1, 2, 3, 4]
        await log.close()
        await store.close()
        await other_store.close()
    run(go())


def test_a_listener_that_falls_behind_is_dropped_and_slows_nobody(tmp_path: Path) -> None:
    async def go() -> None:
        store, log = await opened(tmp_path)
        slow = log.subscribe(EventFilter(), 3)
        keeping = log.subscribe(EventFilter(), 100)
        for n in range(10):
            log.record(event(EventKind.STEP_OK, step=f"t:{n}", index=1))
        await until(lambda: len(keeping.items) == 10, "the keeping listener got all ten")
        assert slow.overflowed and slow.closed and slow.take() == []
        await log.close()
        await store.close()
    run(go())


# -- filters -------------------------------------------------------------------------------
FILTERS = [EventFilter(), EventFilter(host="web1"), EventFilter(cluster="shop"),
           EventFilter(cluster="shop#2"), EventFilter(kind="step"), EventFilter(kind="step."),
           EventFilter(kind="step.ok"), EventFilter(kind="deploy"), EventFilter(deployment=3),
           EventFilter(host="web2", kind="undo", cluster="shop")]
ROWS = [(1, "step.ok", "web1", "shop#1", 1), (2, "step.okay", "web1", None, 2),
        (3, "steps.x", "web2", "shop#2", 3), (4, "undo.ok", "web2", "shop#2", 3),
        (5, "deploy.ready", "web2", "shopping#1", 4), (6, "step.failed", "web3", "shop", 5)]


@pytest.mark.parametrize("wanted", FILTERS, ids=lambda f: repr(f.describe()))
def test_a_filter_takes_the_same_events_in_python_and_in_sql(wanted: EventFilter) -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    events = [StoredEvent(i, kind, host, cluster, dep, "{}") for i, kind, host, cluster, dep
              in ROWS]
    for e in events:
        conn.execute("INSERT INTO events (id, at, kind, hostname, cluster, deployment_id, json)"
                     " VALUES (?, 0, ?, ?, ?, ?, '{}')",
                     (e.id, e.kind, e.hostname, e.cluster, e.deployment_id))
    where, params = wanted.where()
    in_sql = [row[0] for row in conn.execute(f"SELECT id FROM events WHERE {where} ORDER BY id",
                                             params)]
    assert in_sql == [e.id for e in events if wanted.matches(e)]


def test_filters_take_prefixes_by_their_parts() -> None:
    def ids(wanted: EventFilter) -> list[int]:
        return [i for i, kind, host, cluster, dep in ROWS
                if wanted.matches(StoredEvent(i, kind, host, cluster, dep, "{}"))]
    assert ids(EventFilter(kind="step")) == [1, 2, 6]       # every step.*, not steps.x
    assert ids(EventFilter(kind="step.ok")) == [1]          # not step.okay
    assert ids(EventFilter(cluster="shop")) == [1, 3, 4, 6]  # every run, not shopping#1
    assert ids(EventFilter(cluster="shop#2")) == [3, 4]
    assert ids(EventFilter(host="web2", kind="undo")) == [4]


# -- the stream, served in-process ---------------------------------------------------------
@contextlib.asynccontextmanager
async def served(tmp: Path, **http: Any) -> AsyncIterator[tuple[str, Store, EventLog]]:
    """The HTTP app over a store and an event log alone (no engine: events are recorded
    by hand), on a free port; yields its base URL."""
    config = configured(tmp, listen="127.0.0.1:0", **http)
    store = Store(config.get("store.path"))
    await store.open()
    log = EventLog(config, store)
    await log.start()
    server = HttpServer(Context(config, store, None, None, Acl({}), Tokens({}),  # type: ignore
                                lambda: True, log))
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", store, log
    finally:
        await server.stop()
        await log.close()
        await store.close()


def test_an_event_both_replayed_and_live_is_sent_once(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An event published after the stream subscribed but before its replay read the
    store is in both: it goes out once, in its place."""
    async def go() -> None:
        async with served(tmp_path) as (base, store, log):
            for n in range(3):
                log.record(event(EventKind.STEP_OK, step=f"t:{n}", index=1))
            await until(lambda: log.published == 3, "three events stored")
            read = store.events_after

            async def racing(*args: Any, **kw: Any) -> Any:
                if log.published == 3:
                    log.record(event(EventKind.READY))
                    await until(lambda: log.published == 4, "one more published")
                return await read(*args, **kw)
            monkeypatch.setattr(store, "events_after", racing)
            async with aiohttp.ClientSession() as session, \
                    open_stream(session, f"{base}/api/v1/events?after=1") as stream:
                frames = await stream.until("deploy.ready")
                log.record(event(EventKind.STEP_OK, step="t:after", index=1))
                frames.append(await stream.next())
            assert [f.id for f in frames] == [2, 3, 4, 5]
    run(go())


def test_a_stream_that_falls_behind_is_closed_and_resumes_without_loss(tmp_path: Path) -> None:
    async def go() -> None:
        async with served(tmp_path, stream_queue=2) as (base, _store, log), \
                aiohttp.ClientSession() as session:
            url = f"{base}/api/v1/events"
            async with open_stream(session, url) as stream:
                log.record(event(EventKind.STEP_OK, step="t:first", index=1))
                first = await stream.next()
                for n in range(10):  # one batch: more than the queue holds at once
                    log.record(event(EventKind.STEP_OK, step=f"t:{n}", index=1))
                with pytest.raises(EOFError):
                    await stream.next()
            async with open_stream(session, url, last_event_id=first.id) as stream:
                rest = [await stream.next() for _ in range(10)]
            assert [f.id for f in [first, *rest]] == list(range(1, 12))
    run(go())


def test_a_client_that_goes_away_ends_its_stream_quietly(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    async def go() -> None:
        async with served(tmp_path, heartbeat=0.05) as (base, _store, log):
            async with aiohttp.ClientSession() as session, \
                    open_stream(session, f"{base}/api/v1/events"):
                await until(lambda: len(log.subscriptions) == 1, "subscribed")
            log.record(event(EventKind.STEP_OK, step="t:one", index=1))
            await until(lambda: not log.subscriptions, "the stream ended on its next write")
    run(go())
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_a_resume_point_beyond_the_log_starts_at_its_end(tmp_path: Path) -> None:
    """A client of another store (ids it never saw) still hears what comes."""
    async def go() -> None:
        async with served(tmp_path) as (base, _store, log), \
                aiohttp.ClientSession() as session, \
                open_stream(session, f"{base}/api/v1/events", last_event_id=500) as stream:
            log.record(event(EventKind.STEP_OK, step="t:one", index=1))
            assert (await stream.next()).id == 1
    run(go())


# -- webhooks ------------------------------------------------------------------------------
def test_a_watch_delivers_every_event_signed_in_order_through_refusals_and_a_restart(
        tmp_path: Path) -> None:
    async def go() -> None:
        receiver = Receiver(SECRET, refuse=2)
        async with receiving(receiver) as port:
            watches = {"hook": {"url": f"http://127.0.0.1:{port}/hook", "secret": SECRET,
                                "kind": "step"}}
            http = {"watches": watches, "watch_backoff": 0.01, "watch_max_backoff": 0.05}
            store, log = await opened(tmp_path, **http)
            config = configured(tmp_path, **http)
            hooks = Webhooks(config, store, log)
            await hooks.start()
            d = deployment(3, "web1")
            for n in range(3):
                log.record(event(EventKind.STEP_STARTED, d, step=f"t:{n}", index=n + 1))
                log.record(event(EventKind.STEP_OK, d, step=f"t:{n}", index=n + 1))
            log.record(event(EventKind.READY, d))  # not a step: the filter leaves it out
            await until(lambda: hooks.counts()[0] == 6, "six step events delivered")
            assert hooks.counts() == (6, 2) and len(receiver.ids("/hook")) == 6
            assert not receiver.bad
            await hooks.close()
            log.record(event(EventKind.UNDO_OK, d, step="t:x"))
            log.record(event(EventKind.STEP_OK, d, step="t:late", index=1))
            await until(lambda: log.published == 9, "two more events stored")
            again = Webhooks(config, store, log)  # a restart: it resumes at the stored cursor
            await again.start()
            await until(lambda: len(receiver.ids("/hook")) == 7, "the late step delivered")
            got = receiver.got["/hook"]
            assert receiver.ids("/hook") == [1, 2, 3, 4, 5, 6, 9]
            assert [data["kind"] for data in got] == ["step.started", "step.ok"] * 3 + ["step.ok"]
            assert again.describe_all()[0]["cursor"] == 9
            assert SECRET not in str(again.describe_all())
            await again.close()
            await log.close()
            await store.close()
    run(go(), 30)


# -- a real jarvis over real HTTP ----------------------------------------------------------
WORKERS = Path(__file__).parent / "workers"
TOKEN, VIEWER = "ci-token-0123456789", "viewer-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEPS = ["step.started", "step.ok"] * 3
CONTRACT = {"id", "at", "kind", "hostname", "cluster", "deployment", "state", "step", "index",
            "total", "seconds", "error"}


def jarvis_config(tmp: Path, **http: Any) -> Config:
    data = {"store": {"path": str(tmp / "jarvis.db")},
            "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5},
            "pipelines": CORE_PIPELINES,
            "http": {"listen": "127.0.0.1:0", "read": "token", "heartbeat": 0.3,
                     "tokens": {"ci": {"sha256": digest(TOKEN)},
                                "viewer": {"sha256": digest(VIEWER)}}, **http},
            "acl": {"watch": {"allow": ["http:ci"]}, "deploy": {"allow": ["http:ci"]}}}
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return config_mod.load(path, export=False)


async def deploy(jarvis: Jarvis, host: str) -> int:
    """Deploy ``host`` through the engine (as the API's POST will); its id, once ended."""
    plan = jarvis.engine.plan({"instance": {"hostname": host, "fqdn": f"{host}.example.com",
                                            "provider": "local"}})
    started = await jarvis.engine.deploy(plan, Source("test design", "file"), requester="http:ci")
    current = jarvis.engine.running.get(host)
    if current is not None and current.task is not None:
        await current.task
    for _ in range(500):  # its last event is written a moment after the run ends
        stored, _ = await jarvis.store.events_after(0, EventFilter(deployment=started.id))
        if stored and stored[-1].kind == "deploy.ready":
            return started.id
        await asyncio.sleep(0.01)
    raise AssertionError(f"{host}: no deploy.ready in the event log")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopThread, Jarvis, str]]:
    tmp = tmp_path_factory.mktemp("events")
    with bot_in_thread(jarvis_config(tmp)) as (loop, bot):
        assert bot.bot.http is not None
        yield loop, bot.bot, f"http://127.0.0.1:{bot.bot.http.port}"


@pytest.mark.servers
def test_a_deploy_by_post_sends_every_event_on_the_stream_in_order(live) -> None:
    loop, _jarvis, base = live

    async def go() -> None:
        async with aiohttp.ClientSession(headers=AUTH) as session:
            async with open_stream(session, f"{base}/api/v1/events?host=alpha") as stream:
                design = yaml.safe_dump({"instance": {"hostname": "alpha", "provider": "local",
                                                      "fqdn": "alpha.example.com"}})
                async with session.post(f"{base}/api/v1/deployments",
                                        json={"design": design}) as answer:
                    assert answer.status == 202, await answer.text()
                    number = (await answer.json())["deployment"]["id"]
                frames = await stream.until("deploy.ready")
            assert [f.kind for f in frames] == ["deploy.accepted", *STEPS, "deploy.ready"]
            assert [f.id for f in frames] == sorted({f.id for f in frames})
            assert all(set(f.data) == CONTRACT and f.data["id"] == f.id for f in frames)
            assert {f.data["deployment"] for f in frames} == {number}
            assert [f.data["index"] for f in frames[1:-1]] == [1, 1, 2, 2, 3, 3]
            assert [f.data["step"] for f in frames[1:3]] == ["core:validate"] * 2
            assert frames[-1].data["state"] == "ready"
            async with open_stream(session, f"{base}/api/v1/events?deployment={number}&after=0"
                                   ) as replay:
                again = await replay.until("deploy.ready")
            assert [f.data for f in again] == [f.data for f in frames]
    loop.run(go(), 120)


@pytest.mark.servers
def test_a_watcher_that_reconnects_with_last_event_id_misses_nothing(live) -> None:
    loop, jarvis, base = live
    url = f"{base}/api/v1/events?host=beta"

    async def go() -> None:
        async with aiohttp.ClientSession(headers=AUTH) as session:
            async with open_stream(session, url) as stream:
                task = asyncio.create_task(deploy(jarvis, "beta"))
                first = [await stream.next(), await stream.next()]  # then it goes away
            await task  # the rest happens while nobody watches
            async with open_stream(session, url, last_event_id=first[-1].id) as stream:
                rest = await stream.until("deploy.ready")
            stored, _ = await jarvis.store.events_after(0, EventFilter(host="beta"))
        seen = [f.id for f in first + rest]
        assert seen == [e.id for e in stored]
        assert [f.kind for f in first + rest] == ["deploy.accepted", *STEPS, "deploy.ready"]
    loop.run(go(), 120)


@pytest.mark.servers
def test_the_stream_needs_a_token_when_reads_do_and_says_what_is_wrong(live) -> None:
    loop, _jarvis, base = live

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/api/v1/events") as response:
                assert response.status == 401 and "bearer token" in (await response.json())["error"]
            async with session.get(f"{base}/api/v1/events?after=x", headers=AUTH) as response:
                assert response.status == 400
                assert "after must be an event id" in (await response.json())["error"]
            # Ids SQLite cannot hold, or that int() reads but are no plain number: 400
            # before the stream starts, not a stream cut off by the store's overflow.
            for wrong in ("9" * 23, "1_000", "²"):
                async with session.get(f"{base}/api/v1/events", headers={
                        **AUTH, "Last-Event-ID": wrong}) as response:
                    assert response.status == 400, wrong
                    assert "Last-Event-ID must be an event id" in (await response.json())["error"]
            async with open_stream(session, f"{base}/api/v1/events?host=nobody",
                                   headers=AUTH) as stream:
                await asyncio.sleep(0.8)
                with pytest.raises(TimeoutError):
                    await stream.next(timeout=0.1)
                assert "heartbeat" in stream.comments  # every http.heartbeat on an idle stream
    loop.run(go(), 60)


@pytest.mark.servers
def test_watches_are_registered_by_the_watch_rule_and_never_show_their_secret(live) -> None:
    loop, _jarvis, base = live
    watch = {"name": "ops", "url": "http://user:pw-in-url@127.0.0.1:9/hook?key=q-secret",
             "secret": "registered-secret-0123", "kind": "deploy"}

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            async def call(method: str, path: str, token: str | None = TOKEN,
                           body: Any = None) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with session.request(method, f"{base}{path}", json=body,
                                           headers=headers) as response:
                    return response.status, await response.json()
            assert (await call("POST", "/api/v1/watches", None, watch))[0] == 401
            status, answer = await call("POST", "/api/v1/watches", VIEWER, watch)
            assert status == 403 and "acl.watch" in answer["error"]
            status, answer = await call("POST", "/api/v1/watches", body={**watch, "url": "ftp://x"})
            assert status == 400 and "http:// or https://" in answer["error"]
            status, created = await call("POST", "/api/v1/watches", body=watch)
            assert status == 201 and created["origin"] == "http:ci" and created["kind"] == "deploy"
            status, _ = await call("POST", "/api/v1/watches", body=watch)
            assert status == 400  # the name is taken
            listed = (await call("GET", "/api/v1/watches"))[1]
            one = (await call("GET", f"/api/v1/watches/{created['id']}"))[1]
            for answer in (created, listed, one):
                shown = json.dumps(answer)
                assert "registered-secret-0123" not in shown and "pw-in-url" not in shown
                assert "q-secret" not in shown
            assert (await call("DELETE", f"/api/v1/watches/{created['id']}"))[0] == 200
            assert (await call("GET", f"/api/v1/watches/{created['id']}"))[0] == 404
    loop.run(go(), 60)


@pytest.mark.servers
def test_watches_deliver_what_happened_while_the_receiver_and_jarvis_were_down(
        tmp_path: Path) -> None:
    """The receiver is down while one jarvis deploys gamma; that jarvis stops; a new one
    on the same store deploys delta; then the receiver starts: the configured watch
    gets every event, the registered one (host gamma) every gamma event, in order,
    each signed with its own secret."""
    port = free_port()
    hooks = {"all": {"url": f"http://127.0.0.1:{port}/all", "secret": SECRET}}
    config = jarvis_config(tmp_path, watches=hooks, watch_backoff=0.05, watch_max_backoff=0.2)
    registered = {"name": "gamma", "url": f"http://127.0.0.1:{port}/gamma",
                  "secret": "gamma-secret-0123", "host": "gamma"}

    def started() -> Jarvis:
        return Jarvis(config, role="jarvis test", adapters=[QueueAdapter()], drive=True,
                      adopt=True)

    async def go() -> None:
        async with started() as first:
            assert first.http is not None and first.webhooks is not None
            async with aiohttp.ClientSession(headers=AUTH) as session, session.post(
                    f"http://127.0.0.1:{first.http.port}/api/v1/watches",
                    json=registered) as response:
                assert response.status == 201, await response.text()
            await deploy(first, "gamma")
            await until(lambda: first.webhooks is not None and first.webhooks.counts()[1] >= 2,
                        "deliveries failing while the receiver is down")
            assert first.webhooks.counts()[0] == 0
        async with started() as second:
            await deploy(second, "delta")
            everything, _ = await second.store.events_after(0)
            gamma = [e.id for e in everything if e.hostname == "gamma"]
            assert len(everything) == 16 and len(gamma) == 8
            receiver = Receiver(SECRET, secrets={"/gamma": "gamma-secret-0123"})
            hooks = second.webhooks
            assert hooks is not None
            async with receiving(receiver, port):
                await until(lambda: hooks.counts()[0] == 24, "every event to both watches", 30)
            assert receiver.ids("/all") == [e.id for e in everything]
            assert receiver.ids("/gamma") == gamma
            assert not receiver.bad
    run(go(), 120)
