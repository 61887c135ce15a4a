"""The state store: every deployment, every step, every clipboard version, and who
owns each active deployment.

SQLite in WAL mode, so readers (``status`` from chat) never wait for the writer
(the runner recording a step). The event loop never touches SQLite: all writes
go through one thread that owns the writing connection, reads through another
thread with its own connection. Writes asked for in the same turn of the event
loop go to the writer together and commit as one transaction (each in its own
savepoint, so one failing write fails alone): with 64 steps in flight this
saves most of the commits and thread hand-overs, and every write is still
committed before its ``await`` returns. Clipboards are stored as the YAML the workers
saw, secrets included: the store is the one place that keeps them, and its file
is created mode 0600.

Several processes may share the file (a bot and a ``jarvis deploy``). What must
hold across them is decided here, in the transaction that writes, never from a
process's memory: a partial unique index allows at most one active deployment
per host, so of two processes racing to start one, exactly one insert succeeds;
operator locks are read in the same transaction that starts a deployment; and a
deployment changes owner only by a compare-and-set on its owner (see
``clipboard.owner`` for when an owner counts as gone).

A deployment awaiting approval is active (it holds its host) but not driven: it
has no owner, and the ownership writes (claim, renew, release, cancel requests)
and ``active()`` (what a restart takes up) see only driven ones. It leaves that
state only by a compare-and-set on the state itself — approved, cancelled or
expired — so of two people approving at once, one does.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from clipboard import document, redact
from clipboard.errors import HostBusy, HostLocked, StoreError
from clipboard.owner import Owner
from clipboard.records import (ACTIVE, DRIVEN, NAMES_SHOWN, STOPPED, Deployment, Lock, State,
                               StatusAnswer, StepRecord, Summary, sql_list)

T = TypeVar("T")

ACTIVE_SQL = sql_list(ACTIVE)
DRIVEN_SQL = sql_list(DRIVEN)
STOPPED_SQL = sql_list(STOPPED)
# records.attention_rank, in SQL: failures first, then what rollback left, then the cancelled.
ATTENTION_ORDER = ("CASE state WHEN 'rollback failed' THEN 0 WHEN 'failed' THEN 1"
                   " WHEN 'rolled back' THEN 2 ELSE 3 END")

SCHEMA = f"""
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
    attempt INTEGER NOT NULL DEFAULT 1
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
"""
# Columns added since the first release: a store written by it gains them on open.
ADDED_COLUMNS = {"deployments": {"owner_id": "TEXT", "owner": "TEXT", "lease_until": "REAL",
                                 "attempt": "INTEGER NOT NULL DEFAULT 1",
                                 "cancel_requested": "TEXT"},
                 "steps": {"attempt": "INTEGER NOT NULL DEFAULT 1"},
                 "clipboards": {"attempt": "INTEGER NOT NULL DEFAULT 1"}}
ONE_ACTIVE_PER_HOST = (f"CREATE UNIQUE INDEX IF NOT EXISTS one_active_per_host ON deployments"
                       f" (hostname) WHERE state IN {ACTIVE_SQL}")

DEPLOYMENT_COLUMNS = ("id", "hostname", "cluster", "source", "source_kind", "source_sha256",
                      "fetched_at", "requester", "reply_to", "pipeline", "steps", "rollback",
                      "state", "current_step", "error", "created_at", "started_at",
                      "finished_at", "meta", "owner", "lease_until", "attempt")
STEP_COLUMNS = ("id", "deployment_id", "idx", "name", "kind", "state", "started_at",
                "finished_at", "exit_status", "error", "stderr_tail", "attempt")
LOCK_COLUMNS = ("hostname", "owner", "reason", "created_at")


@dataclass(frozen=True)
class ClipboardVersion:
    """One stored clipboard, without its YAML (``Store.clipboard_versions``)."""

    id: int
    after_step: int  # the step's number; 0: the design as fetched; -1: after an undo
    label: str       # initial, ok, failed, undo <name>
    attempt: int
    created_at: float


def default_path() -> Path:
    from clipboard.config import state_dir
    return state_dir() / "jarvis.db"


class Store:
    """Async facade over one SQLite file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []

    # -- plumbing -------------------------------------------------------------------------
    async def open(self) -> None:
        """Open (creating or upgrading) the file; StoreError in one line when it cannot be."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._open_writer)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the store {self.path} cannot be opened: {exc} (store.path must "
                             "name a file jarvis may create and write)") from None
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        except OSError as exc:
            raise StoreError(f"the store {self.path} cannot be opened: {exc.strerror or exc} "
                             "(store.path must name a file in a directory jarvis may "
                             "create and write)") from None

    def _damaged(self, exc: sqlite3.DatabaseError) -> StoreError:
        return StoreError(f"the store {self.path} cannot be used: {exc} (a damaged or foreign "
                          "file: move it away to start a new store)")

    def _checked(self, exc: Exception) -> Exception:
        """SQLite's word for a damaged file (found by a read or write long after
        ``open``, in a page the schema did not touch) as one line naming the file."""
        return self._damaged(exc) if type(exc) is sqlite3.DatabaseError else exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _open_writer(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"the store path {self.path} is a directory; store.path names a file")
        for parent in (self.path.parent, *self.path.parent.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise StoreError(f"the store {self.path} cannot be created: {parent} is "
                                     "not a directory (fix store.path)")
                break
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(SCHEMA)
            _upgrade(conn)
        except BaseException:
            conn.close()
            raise
        self._wconn = conn

    async def close(self) -> None:
        def close_writer() -> None:
            if self._wconn is not None:
                self._wconn.close()
                self._wconn = None

        def close_reader() -> None:
            if self._rconn is not None:
                self._rconn.close()
                self._rconn = None

        loop = asyncio.get_running_loop()
        self._submit_batch()
        await loop.run_in_executor(self._writer, close_writer)
        await loop.run_in_executor(self._reader, close_reader)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer thread with the next batch; its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._submit_batch)
        self._batch.append((fn, future))
        return await future

    def _submit_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._writer.submit(self._commit_batch, batch, asyncio.get_running_loop())

    def _commit_batch(self, batch: list[tuple[Callable[[sqlite3.Connection], Any],
                                              asyncio.Future[Any]]],
                      loop: asyncio.AbstractEventLoop) -> None:
        """Writer thread: one transaction, a savepoint per write; answer the loop once."""
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        conn = self._wconn
        try:
            assert conn is not None, "store not opened"
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                conn.execute("SAVEPOINT write")
                try:
                    outcome = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                    outcomes.append((future, None, self._checked(exc)))
                    continue
                conn.execute("RELEASE write")
                outcomes.append((future, outcome, None))
            conn.execute("COMMIT")
        except Exception as exc:
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, self._checked(exc)) for _, future in batch]
        loop.call_soon_threadsafe(_settle, outcomes)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._rconn is None:
                self._rconn = self._connect()
            try:
                return fn(self._rconn)
            except sqlite3.DatabaseError as exc:
                raise self._checked(exc) from None
        return await asyncio.get_running_loop().run_in_executor(self._reader, call)

    # -- writes ---------------------------------------------------------------------------
    async def create_deployment(self, *, hostname: str, source: str, pipeline: str,
                                steps: list[dict[str, Any]], clipboard: dict[str, Any],
                                rollback: bool = False, requester: str | None = None,
                                reply_to: dict[str, Any] | None = None,
                                source_kind: str | None = None, source_sha256: str | None = None,
                                fetched_at: float | None = None, cluster: str | None = None,
                                meta: dict[str, Any] | None = None, state: str = State.QUEUED,
                                owner: Owner | None = None, lease_until: float | None = None
                                ) -> Deployment:
        """Record a deployment owned by ``owner`` (none: any process may take it up).

        HostLocked when an operator locked the host, HostBusy naming the deployment
        and its owner when the host has an active one — both decided in the
        inserting transaction, so they hold against every other process."""
        row = _row(dict(hostname=hostname, source=source, pipeline=pipeline, steps=steps,
                        clipboard=clipboard, rollback=rollback, requester=requester,
                        reply_to=reply_to, source_kind=source_kind,
                        source_sha256=source_sha256, fetched_at=fetched_at, meta=meta,
                        state=state))

        def insert(conn: sqlite3.Connection) -> Deployment:
            with _transaction(conn):
                _refuse_locked(conn, [hostname])
                _expire_approvals(conn, time.time(), hostname)
                return _insert(conn, row, cluster, owner, lease_until)
        return await self._write(insert)

    async def create_cluster(self, name: str, specs: list[dict[str, Any]], *,
                             owner: Owner | None = None, lease_until: float | None = None
                             ) -> tuple[str, list[Deployment]]:
        """Record every host of a cluster under a new cluster id ``<name>#<n>``, at once:
        all or none (a locked or busy host refuses the whole cluster).

        The id is chosen in the same transaction as the inserts, so two deployments
        of the same cluster never share one. ``specs`` are ``create_deployment``'s
        keyword arguments (without ``cluster`` and the owner).
        """
        rows = [_row(spec) for spec in specs]

        def insert(conn: sqlite3.Connection) -> tuple[str, list[Deployment]]:
            with _transaction(conn):
                _refuse_locked(conn, [row["hostname"] for row in rows])
                _expire_approvals(conn, time.time())
                found = conn.execute(
                    "SELECT cluster FROM deployments WHERE cluster >= ? AND cluster < ?",
                    (f"{name}#", f"{name}$")).fetchall()
                numbers = [int(r[0].rpartition("#")[2]) for r in found
                           if r[0].rpartition("#")[2].isdigit()]
                cluster_id = f"{name}#{max(numbers, default=0) + 1}"
                try:
                    return cluster_id, [_insert(conn, row, cluster_id, owner, lease_until,
                                                check=False) for row in rows]
                except sqlite3.IntegrityError:
                    raise _busy_error(conn, [row["hostname"] for row in rows],
                                      f"cluster {name}: ") from None
        return await self._write(insert)

    async def reactivate(self, deployments: list[Deployment], *, owner: Owner,
                         lease_until: float, what: str = "") -> None:
        """Make stopped deployments active again under ``owner`` (a retry), all or none:
        each must still be its host's latest deployment, unlocked and not busy."""
        def update(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                hosts = [d.hostname for d in deployments]
                _refuse_locked(conn, hosts)
                newer = [d.hostname for d in deployments if conn.execute(
                    "SELECT 1 FROM deployments WHERE hostname = ? AND id > ? LIMIT 1",
                    (d.hostname, d.id)).fetchone()]
                if newer:
                    raise HostBusy(f"{what}not retried: {', '.join(newer[:10])} deployed "
                                   "again since")
                try:
                    for d in deployments:
                        conn.execute(
                            "UPDATE deployments SET state = ?, error = NULL, finished_at = NULL,"
                            " current_step = ?, meta = ?, attempt = ?, reply_to = ?,"
                            " owner_id = ?, owner = ?, lease_until = ?, cancel_requested = NULL"
                            " WHERE id = ?",
                            (d.state, d.current_step, json.dumps(d.meta), d.attempt,
                             json.dumps(d.reply_to) if d.reply_to else None, owner.token,
                             owner.to_json(), lease_until, d.id))
                except sqlite3.IntegrityError:
                    raise _busy_error(conn, hosts, what) from None
        await self._write(update)

    async def claim(self, deployment: Deployment, owner: Owner, lease_until: float
                    ) -> bool:
        """Take an active deployment over from its previous owner (compare-and-set: of
        two processes adopting one orphan, one wins); whether this one did."""
        previous = deployment.owner.token if deployment.owner else None

        def update(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"UPDATE deployments SET owner_id = ?, owner = ?, lease_until = ? WHERE id = ?"
                f" AND state IN {DRIVEN_SQL} AND owner_id IS ?",
                (owner.token, owner.to_json(), lease_until, deployment.id, previous))
            return cur.rowcount == 1
        claimed = await self._write(update)
        if claimed:
            deployment.owner, deployment.lease_until = owner, lease_until
        return claimed

    async def renew(self, owner: Owner, lease_until: float) -> tuple[set[int], dict[int, str]]:
        """Extend ``owner``'s lease on its active deployments: the ids it still owns, and
        those of them another process asked to cancel (id → who asked)."""
        def update(conn: sqlite3.Connection) -> tuple[set[int], dict[int, str]]:
            conn.execute(f"UPDATE deployments SET lease_until = ? WHERE owner_id = ?"
                         f" AND state IN {DRIVEN_SQL}", (lease_until, owner.token))
            rows = conn.execute(f"SELECT id, cancel_requested FROM deployments WHERE"
                                f" owner_id = ? AND state IN {DRIVEN_SQL}",
                                (owner.token,)).fetchall()
            return ({row[0] for row in rows},
                    {row[0]: row[1] for row in rows if row[1] is not None})
        return await self._write(update)

    async def release(self, owner: Owner) -> None:
        """Give up ``owner``'s active deployments (a clean stop): the next process that
        starts takes them up at once instead of waiting for the lease."""
        def update(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE deployments SET owner_id = NULL, lease_until = NULL WHERE"
                         f" owner_id = ? AND state IN {DRIVEN_SQL}", (owner.token,))
        await self._write(update)

    async def request_cancel(self, deployment_id: int, by: str) -> None:
        """Ask the process that owns a deployment to cancel it (it looks at its renewal)."""
        def update(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE deployments SET cancel_requested = ? WHERE id = ?"
                         f" AND state IN {DRIVEN_SQL}", (by, deployment_id))
        await self._write(update)

    async def approve(self, deployment: Deployment, *, owner: Owner, lease_until: float,
                      clipboard: dict[str, Any]) -> bool:
        """Start a deployment awaiting approval: owned by ``owner``, queued, with
        ``deployment.meta`` (the approval) and ``clipboard`` (its ``jarvis:`` block
        saying who approved) as the clipboard before step 1. Whether it was still
        waiting: false when someone approved, cancelled or expired it first."""
        text = document.dump(clipboard)

        def update(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cur = conn.execute(
                    "UPDATE deployments SET state = ?, meta = ?, owner_id = ?, owner = ?,"
                    " lease_until = ? WHERE id = ? AND state = ?",
                    (State.QUEUED, json.dumps(deployment.meta), owner.token, owner.to_json(),
                     lease_until, deployment.id, State.AWAITING_APPROVAL))
                if cur.rowcount != 1:
                    return False
                conn.execute("INSERT INTO clipboards (deployment_id, after_step, label,"
                             " created_at, yaml) VALUES (?,?,?,?,?)",
                             (deployment.id, 0, "approved", time.time(), text))
                return True
        approved = await self._write(update)
        if approved:
            deployment.state, deployment.owner = State.QUEUED, owner
            deployment.lease_until = lease_until
        return approved

    async def end_wait(self, deployment: Deployment, state: State, error: str | None
                       ) -> bool:
        """End a deployment awaiting approval without running it (cancelled, expired),
        keeping ``deployment.meta``; whether it was still waiting."""
        now = time.time()

        def update(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE deployments SET state = ?, error = ?, finished_at = ?, meta = ?"
                " WHERE id = ? AND state = ?",
                (state, error, now, json.dumps(deployment.meta), deployment.id,
                 State.AWAITING_APPROVAL)).rowcount == 1
        ended = await self._write(update)
        if ended:
            deployment.state, deployment.error, deployment.finished_at = state, error, now
        return ended

    async def expire_approvals(self, now: float | None = None) -> list[Deployment]:
        """Mark every deployment whose approval window has passed ``approval expired``;
        the ones this call marked."""
        at = time.time() if now is None else now
        return await self._write(lambda conn: _expire_approvals(conn, at))

    async def update_deployment(self, deployment_id: int, **fields: Any) -> None:
        allowed = {"state", "current_step", "error", "started_at", "finished_at", "meta"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        if "meta" in fields:
            fields["meta"] = json.dumps(fields["meta"])
        columns = ", ".join(f"{name} = ?" for name in fields)

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE deployments SET {columns} WHERE id = ?",
                         (*fields.values(), deployment_id))
        await self._write(update)

    async def step_started(self, deployment_id: int, idx: int, name: str, kind: str = "step",
                           *, current_step: int | None = None, attempt: int = 1) -> int:
        now = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cur = conn.execute(
                    "INSERT INTO steps (deployment_id, idx, name, kind, state, started_at,"
                    " attempt) VALUES (?,?,?,?,?,?,?)",
                    (deployment_id, idx, name, kind, "running", now, attempt))
                if current_step is not None:
                    conn.execute("UPDATE deployments SET current_step = ?, state = 'running',"
                                 " started_at = COALESCE(started_at, ?) WHERE id = ?",
                                 (current_step, now, deployment_id))
                return int(cur.lastrowid)
        return await self._write(insert)

    async def step_finished(self, step_id: int, *, state: str, exit_status: int | None,
                            error: str | None, stderr_tail: list[str], finished_at: float,
                            deployment_id: int, after_step: int | None,
                            clipboard: dict[str, Any] | None, label: str = "",
                            text: str | None = None, attempt: int = 1) -> None:
        """Record a step's end and, in the same transaction, the clipboard after it.

        ``text`` is that clipboard's YAML when the caller has it already (what the
        worker printed): dumping it again would cost more than the step.
        """
        if clipboard is None:
            text = None
        elif text is None:
            text = document.dump(clipboard)

        def update(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("UPDATE steps SET state = ?, exit_status = ?, error = ?, stderr_tail = ?,"
                             " finished_at = ? WHERE id = ?",
                             (state, exit_status, error, "\n".join(stderr_tail), finished_at,
                              step_id))
                if text is not None and after_step is not None:
                    conn.execute("INSERT INTO clipboards (deployment_id, after_step, label,"
                                 " created_at, yaml, attempt) VALUES (?,?,?,?,?,?)",
                                 (deployment_id, after_step, label, finished_at, text, attempt))
        await self._write(update)

    async def add_lock(self, hostname: str, owner: str, reason: str) -> tuple[Lock, bool]:
        """Lock ``hostname``: the lock, and whether it is new (one already there is kept)."""
        def insert(conn: sqlite3.Connection) -> tuple[Lock, bool]:
            cur = conn.execute("INSERT OR IGNORE INTO locks (hostname, owner, reason, created_at)"
                               " VALUES (?,?,?,?)", (hostname, owner, reason, time.time()))
            return _lock(conn.execute("SELECT * FROM locks WHERE hostname = ?",
                                      (hostname,)).fetchone()), cur.rowcount == 1
        return await self._write(insert)

    async def remove_lock(self, hostname: str) -> Lock | None:
        """Unlock ``hostname``; the lock that was there, or None."""
        def delete(conn: sqlite3.Connection) -> Lock | None:
            with _transaction(conn):
                row = conn.execute("SELECT * FROM locks WHERE hostname = ?",
                                   (hostname,)).fetchone()
                conn.execute("DELETE FROM locks WHERE hostname = ?", (hostname,))
            return _lock(row) if row else None
        return await self._write(delete)

    async def interrupted_steps(self, deployment_id: int) -> None:
        """Mark steps left 'running' by a jarvis that died as interrupted."""
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE steps SET state = 'interrupted', finished_at = ?, error = ?"
                         " WHERE deployment_id = ? AND state = 'running'",
                         (time.time(), "jarvis stopped during this step", deployment_id))
        await self._write(update)

    # -- reads ----------------------------------------------------------------------------
    async def locks(self) -> list[Lock]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM locks ORDER BY hostname").fetchall())
        return [_lock(row) for row in rows]

    async def deployment(self, deployment_id: int) -> Deployment | None:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchall())
        return _deployment(rows[0]) if rows else None

    async def latest(self, hostname: str) -> Deployment | None:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE hostname = ? ORDER BY id DESC LIMIT 1",
            (hostname,)).fetchall())
        return _deployment(rows[0]) if rows else None

    async def history(self, hostname: str, limit: int = 10) -> list[Deployment]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE hostname = ? ORDER BY id DESC LIMIT ?",
            (hostname, limit)).fetchall())
        return [_deployment(row) for row in rows]

    async def history_page(self, hostname: str, page: int, size: int
                           ) -> tuple[list[Deployment], int]:
        """Page ``page`` (1 = newest) of ``size`` deployments of ``hostname``, newest first,
        and how many it has in all: read together, so "page 2 of 5" matches the page."""
        def read(c: sqlite3.Connection) -> tuple[list[Deployment], int]:
            total = c.execute("SELECT count(*) FROM deployments WHERE hostname = ?",
                              (hostname,)).fetchone()[0]
            rows = c.execute("SELECT * FROM deployments WHERE hostname = ? ORDER BY id DESC"
                             " LIMIT ? OFFSET ?", (hostname, size, (page - 1) * size)).fetchall()
            return [_deployment(row) for row in rows], int(total)
        return await self._read(read)

    async def active(self) -> list[Deployment]:
        """Every driven deployment, whoever owns it (none awaiting approval: nobody may
        take those up)."""
        rows = await self._read(lambda c: c.execute(
            f"SELECT * FROM deployments WHERE state IN {DRIVEN_SQL} ORDER BY id").fetchall())
        return [_deployment(row) for row in rows]

    async def active_of(self, hostname: str) -> Deployment | None:
        rows = await self._read(lambda c: c.execute(
            f"SELECT * FROM deployments WHERE hostname = ? AND state IN {ACTIVE_SQL}",
            (hostname,)).fetchall())
        return _deployment(rows[0]) if rows else None

    async def lock_of(self, hostname: str) -> Lock | None:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM locks WHERE hostname = ?", (hostname,)).fetchall())
        return _lock(rows[0]) if rows else None

    async def by_cluster(self, cluster: str) -> list[Deployment]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE cluster = ? ORDER BY id", (cluster,)).fetchall())
        return [_deployment(row) for row in rows]

    async def latest_cluster(self, name: str) -> str | None:
        """The cluster id ``name`` means: itself when it is one (``shop#2``), else the
        newest run of the cluster named so; None when there is none."""
        return await self._read(lambda c: _cluster_named(c, name))

    async def matching(self, labels: dict[str, str], cluster: str | None = None
                       ) -> list[Deployment]:
        """Deployments whose labels (``meta.labels``) equal ``labels``: those of the
        cluster run ``cluster``, or else the latest deployment of every host."""
        where, params = _selection(labels, cluster)
        query = f"SELECT * FROM deployments WHERE {where} ORDER BY id"
        rows = await self._read(lambda c: c.execute(query, params).fetchall())
        return [_deployment(row) for row in rows]

    async def status_of(self, name: str | None, labels: dict[str, str], limit: int,
                        host: str | None, live: frozenset[str] = frozenset()
                        ) -> "StatusAnswer":
        """Everything ``status`` needs: ``name`` as a cluster, else ``host``'s latest
        deployment and steps, else the summary of the hosts ``labels`` select. A
        cluster run in ``live`` is only named: the caller summarises it from memory
        (so ``live`` must be empty when ``labels`` select).

        It is asked while the loop, the writer and 64 running steps compete for the
        GIL, and the reader thread waits for the GIL again after every statement and
        every row. So each answer is one statement that returns one row of JSON
        (two for a cluster: which run, then its summary), however many hosts it covers.
        """
        def read(c: sqlite3.Connection) -> StatusAnswer:
            cluster, found, lock = (_cluster_or_host(c, name, host) if name
                                    else (None, None, None))
            if name and cluster is None:
                if host is None:
                    return StatusAnswer(missing=True)
                if found is None:
                    return StatusAnswer(lock=lock)
                return StatusAnswer(deployment=_deployment(found), lock=lock,
                                    steps=[_step(step) for step in found["step_rows"]])
            if cluster in live:
                return StatusAnswer(cluster=cluster, live=True)
            return StatusAnswer(cluster=cluster, summary=_summary(c, labels, cluster, limit))
        return await self._read(read)

    async def reached(self, deployment_id: int, step: str) -> bool:
        """Whether the deployment ever finished ``step`` successfully."""
        rows = await self._read(lambda c: c.execute(
            "SELECT 1 FROM steps WHERE deployment_id = ? AND name = ? AND kind = 'step'"
            " AND state = 'ok' LIMIT 1", (deployment_id, step)).fetchall())
        return bool(rows)

    async def steps(self, deployment_id: int) -> list[StepRecord]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM steps WHERE deployment_id = ? ORDER BY id", (deployment_id,)).fetchall())
        return [_step(row) for row in rows]

    async def clipboard(self, deployment_id: int, after_step: int | None = None
                        ) -> dict[str, Any] | None:
        """The clipboard after step N (0 = before the first step); None: the latest."""
        if after_step is None:
            query = ("SELECT yaml FROM clipboards WHERE deployment_id = ? ORDER BY id DESC LIMIT 1",
                     (deployment_id,))
        else:
            query = ("SELECT yaml FROM clipboards WHERE deployment_id = ? AND after_step = ?"
                     " ORDER BY id DESC LIMIT 1", (deployment_id, after_step))
        return await self._clipboard_of(*query)

    async def initial_clipboard(self, deployment_id: int) -> dict[str, Any] | None:
        """The clipboard the deployment's first attempt started from: the design as it
        was fetched and validated (what a retry after a rollback starts from again)."""
        return await self._clipboard_of(
            "SELECT yaml FROM clipboards WHERE deployment_id = ? AND after_step = 0"
            " ORDER BY id LIMIT 1", (deployment_id,))

    async def clipboard_versions(self, deployment_id: int) -> list[ClipboardVersion]:
        """Every clipboard the deployment stored, oldest first, without their YAML: a
        step's (``after_step`` = its number), an undo's (``after_step`` -1, label
        ``undo <name>``), of every attempt. A version belongs to the step record whose
        ``finished_at`` equals its ``created_at`` (``step_finished`` writes both at once)."""
        rows = await self._read(lambda c: c.execute(
            "SELECT id, after_step, label, attempt, created_at FROM clipboards"
            " WHERE deployment_id = ? ORDER BY id", (deployment_id,)).fetchall())
        return [ClipboardVersion(*row) for row in rows]

    async def clipboard_version(self, version_id: int) -> dict[str, Any] | None:
        """One stored clipboard by its id (see ``clipboard_versions``)."""
        return await self._clipboard_of("SELECT yaml FROM clipboards WHERE id = ?",
                                        (version_id,))

    async def secret_values(self, deployment_id: int, keys: tuple[str, ...]) -> set[str]:
        """Every secret value any of the deployment's clipboards held: what its logs are
        scrubbed of."""
        found: set[str] = set()
        for stored in await self.clipboards(deployment_id):
            found |= redact.secret_values(stored, keys)
        return found

    async def clipboards(self, deployment_id: int) -> list[dict[str, Any]]:
        """Every stored clipboard version of a deployment, oldest first: all it has held
        (what the secret scrubber must know, not just the latest)."""
        def read(c: sqlite3.Connection) -> list[dict[str, Any]]:  # parsed off the loop too
            rows = c.execute("SELECT yaml FROM clipboards WHERE deployment_id = ? ORDER BY id",
                             (deployment_id,)).fetchall()
            return [document.load(row[0], max_bytes=1 << 62, max_nodes=1 << 62,
                                  what="stored clipboard") for row in rows]
        return await self._read(read)

    async def _clipboard_of(self, query: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        rows = await self._read(lambda c: c.execute(query, params).fetchall())
        return document.load(rows[0][0], max_bytes=1 << 62, max_nodes=1 << 62,
                             what="stored clipboard") if rows else None

def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older jarvis up to this schema. Before ownership was
    kept here, two processes could both leave a host active; the older such
    deployment is marked failed, saying so, before the one-active index is built."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    conn.execute(
        f"UPDATE deployments SET state = 'failed', finished_at = ?, error = 'superseded: "
        f"another deployment of this host was active at the same time' WHERE state IN"
        f" {ACTIVE_SQL} AND id < (SELECT max(id) FROM deployments AS d WHERE"
        f" d.hostname = deployments.hostname AND d.state IN {ACTIVE_SQL})", (time.time(),))
    found = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND"
                         " name = 'one_active_per_host'").fetchone()
    if found is not None and found[0] != ONE_ACTIVE_PER_HOST.replace(" IF NOT EXISTS", ""):
        conn.execute("DROP INDEX one_active_per_host")  # built before a state became active
    conn.execute(ONE_ACTIVE_PER_HOST)


class _transaction:
    """All or nothing for a write's statements (a savepoint: writes run inside a batch)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("SAVEPOINT tx")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type:
            self.conn.execute("ROLLBACK TO tx")
        self.conn.execute("RELEASE tx")


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, outcome, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)


def _selection(labels: dict[str, str], cluster: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause for a cluster run or every host's latest deployment, by labels."""
    where, params = [], []
    for key, value in labels.items():
        where.append("json_extract(meta, ?) = ?")
        params += [f'$.labels."{key}"', value]
    if cluster is not None:
        where.append("cluster = ?")
        params.append(cluster)
    else:
        where.append("id IN (SELECT max(id) FROM deployments GROUP BY hostname)")
    return " AND ".join(where), params


def _row(spec: dict[str, Any]) -> dict[str, Any]:
    """A deployment's column values, serialised outside the writer thread (but its
    clipboard, which learns the deployment's id in ``_insert``)."""
    reply_to = spec.get("reply_to")
    return {"hostname": spec["hostname"], "source": spec["source"],
            "source_kind": spec.get("source_kind"), "source_sha256": spec.get("source_sha256"),
            "fetched_at": spec.get("fetched_at"), "requester": spec.get("requester"),
            "reply_to": reply_to, "reply_to_json": json.dumps(reply_to) if reply_to else None,
            "pipeline": spec["pipeline"], "steps": spec["steps"],
            "steps_json": json.dumps(spec["steps"]), "rollback": bool(spec.get("rollback")),
            "state": spec.get("state") or State.QUEUED, "meta": spec.get("meta") or {},
            "meta_json": json.dumps(spec.get("meta") or {}), "clipboard": spec["clipboard"]}


def _insert(conn: sqlite3.Connection, row: dict[str, Any], cluster: str | None,
            owner: Owner | None, lease_until: float | None, check: bool = True) -> Deployment:
    """Insert one deployment and its first clipboard. The clipboard's ``jarvis`` mapping
    (the operator's side, see clipboard.engine) learns the deployment's id here. With
    ``check``, a busy host raises HostBusy; without, the IntegrityError is the caller's."""
    now = time.time()
    try:
        cur = conn.execute(
            "INSERT INTO deployments (hostname, cluster, source, source_kind, source_sha256,"
            " fetched_at, requester, reply_to, pipeline, steps, rollback, state, created_at,"
            " meta, owner_id, owner, lease_until) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (row["hostname"], cluster, row["source"], row["source_kind"], row["source_sha256"],
             row["fetched_at"], row["requester"], row["reply_to_json"], row["pipeline"],
             row["steps_json"], int(row["rollback"]), row["state"], now, row["meta_json"],
             owner.token if owner else None, owner.to_json() if owner else None, lease_until))
    except sqlite3.IntegrityError:
        if not check:
            raise
        raise _busy_error(conn, [row["hostname"]]) from None
    deployment_id = int(cur.lastrowid or 0)
    clipboard = row["clipboard"]
    if isinstance(clipboard.get("jarvis"), dict):
        clipboard["jarvis"]["deployment"] = deployment_id
    conn.execute("INSERT INTO clipboards (deployment_id, after_step, label, created_at,"
                 " yaml) VALUES (?,?,?,?,?)",
                 (deployment_id, 0, "initial", now, document.dump(clipboard)))
    return Deployment(id=deployment_id, hostname=row["hostname"], source=row["source"],
                      pipeline=row["pipeline"], steps=row["steps"], state=row["state"],
                      created_at=now, cluster=cluster, source_kind=row["source_kind"],
                      source_sha256=row["source_sha256"], fetched_at=row["fetched_at"],
                      requester=row["requester"], reply_to=row["reply_to"],
                      rollback=row["rollback"], meta=row["meta"], owner=owner,
                      lease_until=lease_until)


def _expire_approvals(conn: sqlite3.Connection, now: float, hostname: str | None = None
                      ) -> list[Deployment]:
    """``approval expired`` for deployments still awaiting approval after their window
    (``meta.approval.until``), of ``hostname`` or all; the ones marked."""
    where = "state = ? AND json_extract(meta, '$.approval.until') < ?"
    params: list[Any] = [State.AWAITING_APPROVAL, now]
    if hostname is not None:
        where += " AND hostname = ?"
        params.append(hostname)
    rows = conn.execute(f"SELECT * FROM deployments WHERE {where}", params).fetchall()
    for row in rows:
        conn.execute("UPDATE deployments SET state = ?, finished_at = ?, error = ? WHERE id = ?",
                     (State.APPROVAL_EXPIRED, now, "nobody else approved the force in time",
                      row["id"]))
    expired = [_deployment(row) for row in rows]
    for d in expired:
        d.state, d.finished_at = State.APPROVAL_EXPIRED, now
        d.error = "nobody else approved the force in time"
    return expired


def _refuse_locked(conn: sqlite3.Connection, hostnames: list[str]) -> None:
    """HostLocked naming every locked host among ``hostnames``, who holds it and why."""
    locked: list[Lock] = []
    for start in range(0, len(hostnames), 500):
        chunk = hostnames[start:start + 500]
        locked += [_lock(row) for row in conn.execute(
            f"SELECT * FROM locks WHERE hostname IN ({','.join('?' * len(chunk))})"
            " ORDER BY hostname", chunk)]
    if not locked:
        return
    if len(hostnames) == 1:
        raise HostLocked(f"{locked[0].describe()}; unlock {locked[0].hostname} first")
    shown = "; ".join(lock.describe() for lock in locked[:5])
    more = f"; and {len(locked) - 5} more" if len(locked) > 5 else ""
    raise HostLocked(f"{shown}{more}; nothing was started")


def _busy_error(conn: sqlite3.Connection, hostnames: list[str], what: str = "") -> HostBusy:
    """HostBusy naming the active deployments among ``hostnames`` and their owners."""
    busy: list[Deployment] = []
    for start in range(0, len(hostnames), 500):
        chunk = hostnames[start:start + 500]
        busy += [_deployment(row) for row in conn.execute(
            f"SELECT * FROM deployments WHERE state IN {ACTIVE_SQL} AND hostname IN"
            f" ({','.join('?' * len(chunk))}) ORDER BY id", chunk)]
    if len(hostnames) == 1 and busy:
        d = busy[0]
        return HostBusy(f"{d.hostname} is being deployed by {d.driver()}; wait for it or "
                        f"cancel {d.hostname}")
    shown = "; ".join(f"{d.hostname} by {d.driver()}" for d in busy[:5])
    more = f"; and {len(busy) - 5} more" if len(busy) > 5 else ""
    return HostBusy(f"{what}{shown}{more} already being deployed; nothing was started")


def _deployment(row: "sqlite3.Row | dict[str, Any]") -> Deployment:
    return Deployment(
        id=row["id"], hostname=row["hostname"], source=row["source"], pipeline=row["pipeline"],
        steps=json.loads(row["steps"]), state=row["state"], created_at=row["created_at"],
        cluster=row["cluster"], source_kind=row["source_kind"],
        source_sha256=row["source_sha256"], fetched_at=row["fetched_at"],
        requester=row["requester"],
        reply_to=json.loads(row["reply_to"]) if row["reply_to"] else None,
        rollback=bool(row["rollback"]), current_step=row["current_step"], error=row["error"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        meta=json.loads(row["meta"] or "{}"), owner=Owner.from_json(row["owner"]),
        lease_until=row["lease_until"], attempt=row["attempt"])


def _step(row: "sqlite3.Row | dict[str, Any]") -> StepRecord:
    return StepRecord(id=row["id"], deployment_id=row["deployment_id"], idx=row["idx"],
                      name=row["name"], kind=row["kind"], state=row["state"],
                      started_at=row["started_at"], finished_at=row["finished_at"],
                      exit_status=row["exit_status"], error=row["error"],
                      stderr_tail=(row["stderr_tail"] or "").splitlines(),
                      attempt=row["attempt"])


def _lock(row: "sqlite3.Row | dict[str, Any]") -> Lock:
    return Lock(row["hostname"], row["owner"], row["reason"], row["created_at"])


def _cluster_named(c: sqlite3.Connection, name: str) -> str | None:
    row = c.execute(*_cluster_query(name)).fetchone()
    return row[0] if row else None


def _cluster_query(name: str) -> tuple[str, list[Any]]:
    """The statement selecting the cluster id ``name`` means (see ``latest_cluster``)."""
    if "#" in name:
        return "SELECT cluster FROM deployments WHERE cluster = ? LIMIT 1", [name]
    return ("SELECT cluster FROM deployments WHERE cluster >= ? AND cluster < ?"
            " ORDER BY id DESC LIMIT 1", [f"{name}#", f"{name}$"])


def _cluster_or_host(c: sqlite3.Connection, name: str, host: str | None
                     ) -> tuple[str | None, dict[str, Any] | None, Lock | None]:
    """The cluster id ``name`` means and, in the same statement, ``host``'s latest
    deployment with its steps (as ``_deployment`` and ``_step`` read them) and its lock."""
    cluster_sql, params = _cluster_query(name)
    host_sql = lock_sql = "NULL"
    if host is not None:
        host_sql = (f"(SELECT json_object({_json_pairs(DEPLOYMENT_COLUMNS)}, 'step_rows',"
                    f" (SELECT json_group_array(json_object({_json_pairs(STEP_COLUMNS)}))"
                    f" FROM (SELECT * FROM steps WHERE deployment_id = d.id ORDER BY id)))"
                    f" FROM deployments AS d WHERE hostname = ? ORDER BY id DESC LIMIT 1)")
        lock_sql = (f"(SELECT json_object({_json_pairs(LOCK_COLUMNS)}) FROM locks"
                    f" WHERE hostname = ?)")
        params += [host, host]
    cluster, found, lock = c.execute(f"SELECT ({cluster_sql}), {host_sql}, {lock_sql}",
                                     params).fetchone()
    return (cluster, json.loads(found) if found else None,
            _lock(json.loads(lock)) if lock else None)


def _json_pairs(columns: tuple[str, ...]) -> str:
    return ", ".join(f"'{column}', {column}" for column in columns)


def _summary(c: sqlite3.Connection, labels: dict[str, str], cluster: str | None,
             limit: int) -> "Summary":
    """Counted and grouped by SQLite in one statement (see ``status_of``): the counts,
    the failed and cancelled hosts, the running ones grouped by step (one pipeline's
    hosts at one step share its step name, read from one of them) and the queued."""
    where, params = _selection(labels, cluster)
    counts, attention, running, queued = c.execute(
        f"WITH sel AS NOT MATERIALIZED (SELECT * FROM deployments WHERE {where})"
        " SELECT (SELECT json_group_object(state, n) FROM"
        "   (SELECT state, count(*) AS n FROM sel GROUP BY state)),"
        " (SELECT json_group_array(json(one)) FROM"
        f"   (SELECT json_object({_json_pairs(DEPLOYMENT_COLUMNS)}) AS one FROM sel"
        f"    WHERE state IN {STOPPED_SQL} ORDER BY {ATTENTION_ORDER}, id LIMIT ?)),"
        " (SELECT json_group_array(json_array(step, total, name, n, names)) FROM"
        "   (SELECT g.current_step AS step, json_array_length(d.steps) AS total,"
        "    json_extract(d.steps, '$[' || (g.current_step - 1) || '].step') AS name,"
        "    g.n AS n, g.names AS names"
        "    FROM (SELECT pipeline, current_step, count(*) AS n,"
        "          group_concat(hostname) AS names, min(id) AS sample"
        "          FROM (SELECT * FROM sel WHERE state IN ('running', 'rolling back')"
        "                ORDER BY id)"
        "          GROUP BY pipeline, current_step) AS g"
        "    JOIN deployments AS d ON d.id = g.sample ORDER BY g.n DESC, g.current_step)),"
        " (SELECT json_group_array(hostname) FROM"
        "   (SELECT hostname FROM sel WHERE state = 'queued' ORDER BY id LIMIT ?))",
        (*params, limit, NAMES_SHOWN)).fetchone()
    counts = json.loads(counts)
    return Summary(counts, sum(counts.values()),
                   [_deployment(one) for one in json.loads(attention)],
                   [(step, total, name, n, names.split(",")[:NAMES_SHOWN])
                    for step, total, name, n, names in json.loads(running)],
                   json.loads(queued))
