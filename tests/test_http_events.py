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
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.webhooks import Webhooks
from clipboard import eventlog
from clipboard.config import Config
from clipboard.eventlog import EventLog
from clipboard.records import EventKind
from clipboard.store import Store
from clipboard.store_events import EventFilter, StoredEvent
from clipboard.store_schema import SCHEMA
from tests.engine_kit import run, write_config
from tests.event_kit import Receiver, deployment, event, receiving, until

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
            "state": "running", "step": "t:one", "index": 0, "total": 2, "seconds": 0.123}
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
            await until(lambda: len(receiver.ids("/hook")) == 6, "six step events delivered")
            assert hooks.counts() == (6, 2) and not receiver.bad
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
