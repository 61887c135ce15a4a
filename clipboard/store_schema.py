"""The store's SQL vocabulary: its tables and indexes, how a file written by an older
jarvis is brought up to them, and the state lists and column names the queries share.

Kept apart from the queries so that what is on disk (and what an upgrade must add)
is read in one place. The one-active-deployment-per-host rule lives here as a
partial unique index: it is what makes two processes racing to start a host end
with exactly one insert, whatever either believes. The event log (``events``: one row
per engine event, ``json`` the HTTP contract's shape without its id) and the webhook
watches with their delivery cursors (``watches``) are queried by ``clipboard.store_events``.
"""
from __future__ import annotations

import sqlite3
import time

from clipboard.records import ACTIVE, DRIVEN, STOPPED, State, sql_list

ACTIVE_SQL = sql_list(ACTIVE)
DRIVEN_SQL = sql_list(DRIVEN)
STOPPED_SQL = sql_list(STOPPED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hostname TEXT NOT NULL,
    cluster TEXT,
    source TEXT NOT NULL,
    source_kind TEXT,
    source_sha256 TEXT,
    fetched_at REAL,
    requester TEXT,
    reply_to TEXT,
    pipeline TEXT NOT NULL,
    steps TEXT NOT NULL,
    rollback INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    current_step INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    meta TEXT,
    owner_id TEXT,
    owner TEXT,
    lease_until REAL,
    attempt INTEGER NOT NULL DEFAULT 1,
    cancel_requested TEXT
);
CREATE INDEX IF NOT EXISTS deployments_by_host ON deployments (hostname, id);
CREATE INDEX IF NOT EXISTS deployments_by_state ON deployments (state);
CREATE INDEX IF NOT EXISTS deployments_by_cluster ON deployments (cluster, id);
CREATE INDEX IF NOT EXISTS deployments_by_cluster_state ON deployments (cluster, state);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'step',
    state TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    exit_status INTEGER,
    error TEXT,
    stderr_tail TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS steps_by_deployment ON steps (deployment_id, id);
CREATE TABLE IF NOT EXISTS clipboards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    after_step INTEGER NOT NULL,
    label TEXT NOT NULL,
    created_at REAL NOT NULL,
    yaml TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS clipboards_by_deployment ON clipboards (deployment_id, after_step, id);
CREATE TABLE IF NOT EXISTS locks (
    hostname TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    hostname TEXT NOT NULL,
    cluster TEXT,
    deployment_id INTEGER NOT NULL,
    step TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_host ON events (hostname, id);
CREATE INDEX IF NOT EXISTS events_by_cluster ON events (cluster, id);
CREATE INDEX IF NOT EXISTS events_by_deployment ON events (deployment_id, id);
CREATE TABLE IF NOT EXISTS watches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT,
    host TEXT,
    cluster TEXT,
    kind TEXT,
    cursor INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
"""
# Columns added since the first release: a store written by it gains them on open.
ADDED_COLUMNS = {"deployments": {"owner_id": "TEXT", "owner": "TEXT", "lease_until": "REAL",
                                 "attempt": "INTEGER NOT NULL DEFAULT 1",
                                 "cancel_requested": "TEXT"},
                 "steps": {"attempt": "INTEGER NOT NULL DEFAULT 1", "worker": "TEXT"},
                 "clipboards": {"attempt": "INTEGER NOT NULL DEFAULT 1"}}
ONE_ACTIVE_PER_HOST = (f"CREATE UNIQUE INDEX IF NOT EXISTS one_active_per_host ON deployments"
                       f" (hostname) WHERE state IN {ACTIVE_SQL}")

DEPLOYMENT_COLUMNS = ("id", "hostname", "cluster", "source", "source_kind", "source_sha256",
                      "fetched_at", "requester", "reply_to", "pipeline", "steps", "rollback",
                      "state", "current_step", "error", "created_at", "started_at",
                      "finished_at", "meta", "owner", "lease_until", "attempt")
STEP_COLUMNS = ("id", "deployment_id", "idx", "name", "kind", "state", "started_at",
                "finished_at", "exit_status", "error", "stderr_tail", "attempt", "worker")
LOCK_COLUMNS = ("hostname", "owner", "reason", "created_at")


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older jarvis up to this schema. Before ownership was
    kept here, two processes could both leave a host active; the older such
    deployment is marked failed, saying so, before the one-active index is built."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    conn.execute(
        f"UPDATE deployments SET state = '{State.FAILED}', finished_at = ?, error = 'superseded: "
        f"another deployment of this host was active at the same time' WHERE state IN"
        f" {ACTIVE_SQL} AND id < (SELECT max(id) FROM deployments AS d WHERE"
        f" d.hostname = deployments.hostname AND d.state IN {ACTIVE_SQL})", (time.time(),))
    found = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND"
                         " name = 'one_active_per_host'").fetchone()
    if found is not None and found[0] != ONE_ACTIVE_PER_HOST.replace(" IF NOT EXISTS", ""):
        conn.execute("DROP INDEX one_active_per_host")  # built before a state became active
    conn.execute(ONE_ACTIVE_PER_HOST)
