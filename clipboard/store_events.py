"""The store's event log and webhook watches: every engine event as one row, read
back after an id with filters; each watch with its delivery cursor.

An event's id is its place in the log. SQLite lets one writer at a time commit, so
ids become visible in order even when several processes (a bot, a ``jarvis deploy``)
append: once id 42 can be read, 41 can be too. That is what lets a reader resume
"after 41" — an SSE client's ``Last-Event-ID``, a webhook's cursor — and miss
nothing. ``json`` holds the HTTP contract's event without its id; the id is put in
front when it is read (``StoredEvent.data``), so the text is built once per event
and sent as is to every watcher.

The log is kept to the newest ``http.events_kept`` rows: older ones are deleted as
new ones come, so the table does not grow for ever. A watch whose receiver stayed
away longer than that resumes at the oldest row kept.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from clipboard.errors import JarvisError
from clipboard.store_connection import Connections
from clipboard.store_writer import transaction

CONFIGURED = "config"  # the origin of a watch from http.watches


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the log: what filters look at, and ``data``, the event's JSON."""

    id: int
    kind: str
    hostname: str
    cluster: str | None
    deployment_id: int
    data: str


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append (``json`` without the id, which the insert assigns)."""

    at: float
    kind: str
    hostname: str
    cluster: str | None
    deployment_id: int
    step: str | None
    json: str


def with_id(event_id: int, text: str) -> str:
    """The stored JSON object with ``"id"`` as its first member."""
    return f'{{"id": {event_id}, {text[1:]}' if text != "{}" else f'{{"id": {event_id}}}'


@dataclass(frozen=True)
class EventFilter:
    """Which events a watcher wants; each part optional. ``cluster`` ``shop`` matches
    every run of it (``shop#1``, ``shop#2``) and ``shop#2`` that run only; ``kind``
    ``step`` matches ``step.*`` and ``step.ok`` that kind only."""

    host: str | None = None
    cluster: str | None = None
    deployment: int | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None:
            object.__setattr__(self, "kind", self.kind.rstrip(".") or None)

    def matches(self, event: StoredEvent) -> bool:
        if self.host is not None and event.hostname != self.host:
            return False
        if self.deployment is not None and event.deployment_id != self.deployment:
            return False
        if self.cluster is not None and not _within(event.cluster, self.cluster, "#"):
            return False
        return self.kind is None or _within(event.kind, self.kind, ".")

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters ("1" when it takes everything)."""
        parts: list[str] = []
        params: list[Any] = []
        if self.host is not None:
            parts.append("hostname = ?")
            params.append(self.host)
        if self.deployment is not None:
            parts.append("deployment_id = ?")
            params.append(self.deployment)
        for column, value, joint in (("cluster", self.cluster, "#"), ("kind", self.kind, ".")):
            if value is not None:
                parts.append(f"({column} = ? OR substr({column}, 1, ?) = ?)")
                params.extend((value, len(value) + 1, value + joint))
        return " AND ".join(parts) or "1", params

    def describe(self) -> dict[str, Any]:
        return {"host": self.host, "cluster": self.cluster, "deployment": self.deployment,
                "kind": self.kind}


def _within(value: str | None, wanted: str, joint: str) -> bool:
    return value is not None and (value == wanted or value.startswith(wanted + joint))


@dataclass(frozen=True)
class WatchRow:
    """A webhook watch as stored. ``secret`` is None for a configured one (its secret
    stays in the configuration); ``cursor`` is the last event id it is done with."""

    id: int
    name: str
    origin: str
    url: str
    secret: str | None
    filter: EventFilter
    cursor: int
    created_at: float


# -- in the writer or reader thread ---------------------------------------------------------
def insert_events(conn: sqlite3.Connection, events: list[NewEvent], kept: int) -> list[int]:
    """Append ``events`` in order; their ids. Rows beyond the newest ``kept`` go."""
    ids = []
    with transaction(conn):
        for e in events:
            cur = conn.execute(
                "INSERT INTO events (at, kind, hostname, cluster, deployment_id, step, json)"
                " VALUES (?,?,?,?,?,?,?)",
                (e.at, e.kind, e.hostname, e.cluster, e.deployment_id, e.step, e.json))
            ids.append(int(cur.lastrowid or 0))
        if ids and ids[-1] > kept:
            conn.execute("DELETE FROM events WHERE id <= ?", (ids[-1] - kept,))
    return ids


def last_event_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(id) FROM events").fetchone()
    return int(row[0] or 0)


def events_page(conn: sqlite3.Connection, after: int, wanted: EventFilter, limit: int
                ) -> tuple[list[StoredEvent], int]:
    """Up to ``limit`` events after id ``after`` that ``wanted`` takes, oldest first, and
    the id the reader is done with: the last one returned on a full page, else the
    newest id there was (the rows between, if any, were not wanted; below ``after``
    when the log is not the one ``after`` came from)."""
    newest = last_event_id(conn)
    where, params = wanted.where()
    rows = conn.execute(
        f"SELECT id, kind, hostname, cluster, deployment_id, json FROM events"
        f" WHERE id > ? AND id <= ? AND {where} ORDER BY id LIMIT ?",
        (after, newest, *params, limit)).fetchall()
    found = [StoredEvent(row[0], row[1], row[2], row[3], row[4], with_id(row[0], row[5]))
             for row in rows]
    return found, found[-1].id if len(found) == limit else newest


def _watch_from(row: sqlite3.Row) -> WatchRow:
    return WatchRow(row["id"], row["name"], row["origin"], row["url"], row["secret"],
                    EventFilter(row["host"], row["cluster"], None, row["kind"]), row["cursor"],
                    row["created_at"])


def sync_configured(conn: sqlite3.Connection, configured: dict[str, tuple[str, EventFilter]]
                    ) -> list[WatchRow]:
    """Make the configured watches (name → url and filter) the stored ones of origin
    ``config``, keeping the cursor of each already there (a new one starts after the
    newest event); every watch afterwards."""
    with transaction(conn):
        start = last_event_id(conn)
        for name, (url, wanted) in configured.items():
            conn.execute(
                "INSERT INTO watches (name, origin, url, secret, host, cluster, kind, cursor,"
                " created_at) VALUES (?,?,?,NULL,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET"
                " origin = excluded.origin, url = excluded.url, secret = NULL,"
                " host = excluded.host, cluster = excluded.cluster, kind = excluded.kind",
                (name, CONFIGURED, url, wanted.host, wanted.cluster, wanted.kind, start,
                 time.time()))
        names = list(configured)
        conn.execute(f"DELETE FROM watches WHERE origin = ? AND name NOT IN"
                     f" ({', '.join('?' * len(names))})", (CONFIGURED, *names))
        return [_watch_from(row) for row in conn.execute("SELECT * FROM watches ORDER BY id")]


def add_watch(conn: sqlite3.Connection, name: str, origin: str, url: str, secret: str,
              wanted: EventFilter, after: int | None) -> WatchRow:
    with transaction(conn):
        if conn.execute("SELECT 1 FROM watches WHERE name = ?", (name,)).fetchone():
            raise JarvisError(f"a watch named {name!r} exists already; pick another name "
                              "or delete that one first")
        cursor = last_event_id(conn) if after is None else after
        cur = conn.execute(
            "INSERT INTO watches (name, origin, url, secret, host, cluster, kind, cursor,"
            " created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (name, origin, url, secret, wanted.host, wanted.cluster, wanted.kind, cursor,
             time.time()))
        row = conn.execute("SELECT * FROM watches WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _watch_from(row)


class EventStore(Connections):
    """The event log's and the watches' async queries (a part of ``Store``)."""

    async def append_events(self, events: list[NewEvent], kept: int) -> list[int]:
        """Append ``events`` in one write (in the order given); their ids."""
        return await self._write(lambda conn: insert_events(conn, events, kept))

    async def last_event_id(self) -> int:
        """The newest event's id (0 when the log is empty)."""
        return await self._read(last_event_id)

    async def events_after(self, after: int, wanted: EventFilter | None = None,
                           limit: int = 500) -> tuple[list[StoredEvent], int]:
        """See ``events_page``."""
        return await self._read(
            lambda conn: events_page(conn, after, wanted or EventFilter(), limit))

    async def sync_watches(self, configured: dict[str, tuple[str, EventFilter]]
                           ) -> list[WatchRow]:
        return await self._write(lambda conn: sync_configured(conn, configured))

    async def add_watch(self, name: str, *, origin: str, url: str, secret: str,
                        wanted: EventFilter, after: int | None = None) -> WatchRow:
        """Register a watch; JarvisError when the name is taken."""
        return await self._write(
            lambda conn: add_watch(conn, name, origin, url, secret, wanted, after))

    async def remove_watch(self, watch_id: int) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM watches WHERE id = ?",
                                                    (watch_id,)))

    async def watch_done(self, watch_id: int, cursor: int) -> None:
        """Record that a watch is done with every event up to id ``cursor``."""
        await self._write(lambda conn: conn.execute(
            "UPDATE watches SET cursor = ? WHERE id = ? AND cursor < ?",
            (cursor, watch_id, cursor)))
