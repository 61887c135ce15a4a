"""The state store: every deployment, every step, every clipboard version.

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
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from clipboard import document

T = TypeVar("T")

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
    meta TEXT
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
    stderr_tail TEXT
);
CREATE INDEX IF NOT EXISTS steps_by_deployment ON steps (deployment_id, id);
CREATE TABLE IF NOT EXISTS clipboards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    after_step INTEGER NOT NULL,
    label TEXT NOT NULL,
    created_at REAL NOT NULL,
    yaml TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS clipboards_by_deployment ON clipboards (deployment_id, after_step, id);
CREATE TABLE IF NOT EXISTS locks (
    hostname TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
"""

ACTIVE_STATES = ("queued", "running")
DEPLOYMENT_COLUMNS = ("id", "hostname", "cluster", "source", "source_kind", "source_sha256",
                      "fetched_at", "requester", "reply_to", "pipeline", "steps", "rollback",
                      "state", "current_step", "error", "created_at", "started_at",
                      "finished_at", "meta")
STEP_COLUMNS = ("id", "deployment_id", "idx", "name", "kind", "state", "started_at",
                "finished_at", "exit_status", "error", "stderr_tail")


@dataclass
class Deployment:
    id: int
    hostname: str
    source: str
    pipeline: str
    steps: list[dict[str, Any]]
    state: str
    created_at: float
    cluster: str | None = None
    source_kind: str | None = None
    source_sha256: str | None = None
    fetched_at: float | None = None
    requester: str | None = None
    reply_to: dict[str, Any] | None = None
    rollback: bool = False
    current_step: int = 0
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def step_name(self, number: int) -> str | None:
        """The name of step ``number`` (1-based) of its pipeline; None outside it."""
        return str(self.steps[number - 1]["step"]) if 1 <= number <= len(self.steps) else None


@dataclass(frozen=True)
class Lock:
    """A host an operator has locked: no deployment of it starts until it is unlocked."""

    hostname: str
    owner: str
    reason: str
    created_at: float


NAMES_SHOWN = 8


@dataclass
class Summary:
    """Many hosts at once: counts per state, the failed and cancelled ones (failures
    first, up to a limit), the running ones grouped by step as (step number, steps,
    step name, how many, first hostnames), and the first queued hostnames."""

    counts: dict[str, int]
    total: int
    attention: list["Deployment"]
    running: list[tuple[int, int, str | None, int, list[str]]]
    queued: list[str]

    @property
    def stuck(self) -> int:
        """How many hosts failed or were cancelled (``attention`` may show fewer)."""
        return self.counts.get("failed", 0) + self.counts.get("cancelled", 0)


def summarize(deployments: list["Deployment"], limit: int) -> Summary:
    """The summary ``_summary`` reads from the store, made from deployments in memory:
    a cluster run the bot is following is answered without a trip to the store."""
    ordered = sorted(deployments, key=lambda d: d.id)
    counts: dict[str, int] = {}
    groups: dict[tuple[str, int], list[Deployment]] = {}
    for d in ordered:
        counts[d.state] = counts.get(d.state, 0) + 1
        if d.state == "running":
            groups.setdefault((d.pipeline, d.current_step), []).append(d)
    attention = sorted((d for d in ordered if d.state in ("failed", "cancelled")),
                       key=lambda d: d.state == "cancelled")[:limit]
    running = [(step, len(hosts[0].steps), hosts[0].step_name(step), len(hosts),
                [d.hostname for d in hosts[:NAMES_SHOWN]])
               for (_, step), hosts in groups.items()]
    running.sort(key=lambda group: (-group[3], group[0]))
    queued = [d.hostname for d in ordered if d.state == "queued"][:NAMES_SHOWN]
    return Summary(counts, len(ordered), attention, running, queued)


@dataclass
class StatusAnswer:
    """What ``Store.status_of`` found: a cluster's or a selection's summary (none when
    ``live``), a host's latest deployment with its steps, or (``missing``) no cluster
    of that name."""

    cluster: str | None = None
    summary: Summary | None = None
    deployment: "Deployment | None" = None
    steps: list["StepRecord"] = field(default_factory=list)
    missing: bool = False
    live: bool = False  # ``cluster`` is a run the caller follows: it makes the summary


@dataclass
class StepRecord:
    id: int
    deployment_id: int
    idx: int
    name: str
    kind: str
    state: str
    started_at: float | None
    finished_at: float | None
    exit_status: int | None
    error: str | None
    stderr_tail: list[str]


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
        await asyncio.get_running_loop().run_in_executor(self._writer, self._open_writer)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        conn = self._connect()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(SCHEMA)
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
                    outcomes.append((future, None, exc))
                    continue
                conn.execute("RELEASE write")
                outcomes.append((future, outcome, None))
            conn.execute("COMMIT")
        except Exception as exc:
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, future in batch]
        loop.call_soon_threadsafe(_settle, outcomes)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._rconn is None:
                self._rconn = self._connect()
            return fn(self._rconn)
        return await asyncio.get_running_loop().run_in_executor(self._reader, call)

    # -- writes ---------------------------------------------------------------------------
    async def create_deployment(self, *, hostname: str, source: str, pipeline: str,
                                steps: list[dict[str, Any]], clipboard: dict[str, Any],
                                rollback: bool = False, requester: str | None = None,
                                reply_to: dict[str, Any] | None = None,
                                source_kind: str | None = None, source_sha256: str | None = None,
                                fetched_at: float | None = None, cluster: str | None = None,
                                meta: dict[str, Any] | None = None,
                                state: str = "queued") -> Deployment:
        spec = dict(hostname=hostname, source=source, pipeline=pipeline, steps=steps,
                    clipboard=clipboard, rollback=rollback, requester=requester,
                    reply_to=reply_to, source_kind=source_kind, source_sha256=source_sha256,
                    fetched_at=fetched_at, cluster=cluster, meta=meta, state=state)
        rows = [_row(spec)]

        def insert(conn: sqlite3.Connection) -> list[Deployment]:
            with _transaction(conn):
                return [_insert(conn, row, cluster) for row in rows]
        return (await self._write(insert))[0]

    async def create_cluster(self, name: str, specs: list[dict[str, Any]]
                             ) -> tuple[str, list[Deployment]]:
        """Record every host of a cluster under a new cluster id ``<name>#<n>``, at once.

        The id is chosen in the same transaction as the inserts, so two deployments
        of the same cluster never share one. ``specs`` are ``create_deployment``'s
        keyword arguments (without ``cluster``).
        """
        rows = [_row(spec) for spec in specs]

        def insert(conn: sqlite3.Connection) -> tuple[str, list[Deployment]]:
            with _transaction(conn):
                found = conn.execute(
                    "SELECT cluster FROM deployments WHERE cluster >= ? AND cluster < ?",
                    (f"{name}#", f"{name}$")).fetchall()
                numbers = [int(r[0].rpartition("#")[2]) for r in found
                           if r[0].rpartition("#")[2].isdigit()]
                cluster_id = f"{name}#{max(numbers, default=0) + 1}"
                return cluster_id, [_insert(conn, row, cluster_id) for row in rows]
        return await self._write(insert)

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
                           *, current_step: int | None = None) -> int:
        now = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cur = conn.execute(
                    "INSERT INTO steps (deployment_id, idx, name, kind, state, started_at)"
                    " VALUES (?,?,?,?,?,?)", (deployment_id, idx, name, kind, "running", now))
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
                            text: str | None = None) -> None:
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
                                 " created_at, yaml) VALUES (?,?,?,?,?)",
                                 (deployment_id, after_step, label, finished_at, text))
        await self._write(update)

    async def add_lock(self, hostname: str, owner: str, reason: str) -> Lock:
        """Lock ``hostname``; the lock already there, if any, is kept and returned."""
        def insert(conn: sqlite3.Connection) -> Lock:
            conn.execute("INSERT OR IGNORE INTO locks (hostname, owner, reason, created_at)"
                         " VALUES (?,?,?,?)", (hostname, owner, reason, time.time()))
            return _lock(conn.execute("SELECT * FROM locks WHERE hostname = ?",
                                      (hostname,)).fetchone())
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

    async def active(self) -> list[Deployment]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE state IN ('queued', 'running') ORDER BY id").fetchall())
        return [_deployment(row) for row in rows]

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
            cluster, found = _cluster_or_host(c, name, host) if name else (None, None)
            if name and cluster is None:
                if host is None:
                    return StatusAnswer(missing=True)
                if found is None:
                    return StatusAnswer()
                return StatusAnswer(deployment=_deployment(found),
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
        rows = await self._read(lambda c: c.execute(*query).fetchall())
        return document.load(rows[0][0], max_bytes=1 << 62, max_nodes=1 << 62,
                             what="stored clipboard") if rows else None

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
    """A deployment's column values, serialised outside the writer thread."""
    reply_to = spec.get("reply_to")
    return {"hostname": spec["hostname"], "source": spec["source"],
            "source_kind": spec.get("source_kind"), "source_sha256": spec.get("source_sha256"),
            "fetched_at": spec.get("fetched_at"), "requester": spec.get("requester"),
            "reply_to": reply_to, "reply_to_json": json.dumps(reply_to) if reply_to else None,
            "pipeline": spec["pipeline"], "steps": spec["steps"],
            "steps_json": json.dumps(spec["steps"]), "rollback": bool(spec.get("rollback")),
            "state": spec.get("state") or "queued", "meta": spec.get("meta") or {},
            "meta_json": json.dumps(spec.get("meta") or {}),
            "yaml": document.dump(spec["clipboard"])}


def _insert(conn: sqlite3.Connection, row: dict[str, Any], cluster: str | None) -> Deployment:
    now = time.time()
    cur = conn.execute(
        "INSERT INTO deployments (hostname, cluster, source, source_kind, source_sha256,"
        " fetched_at, requester, reply_to, pipeline, steps, rollback, state, created_at,"
        " meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (row["hostname"], cluster, row["source"], row["source_kind"], row["source_sha256"],
         row["fetched_at"], row["requester"], row["reply_to_json"], row["pipeline"],
         row["steps_json"], int(row["rollback"]), row["state"], now, row["meta_json"]))
    deployment_id = int(cur.lastrowid)
    conn.execute("INSERT INTO clipboards (deployment_id, after_step, label, created_at,"
                 " yaml) VALUES (?,?,?,?,?)", (deployment_id, 0, "initial", now, row["yaml"]))
    return Deployment(id=deployment_id, hostname=row["hostname"], source=row["source"],
                      pipeline=row["pipeline"], steps=row["steps"], state=row["state"],
                      created_at=now, cluster=cluster, source_kind=row["source_kind"],
                      source_sha256=row["source_sha256"], fetched_at=row["fetched_at"],
                      requester=row["requester"], reply_to=row["reply_to"],
                      rollback=row["rollback"], meta=row["meta"])


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
        meta=json.loads(row["meta"] or "{}"))


def _step(row: "sqlite3.Row | dict[str, Any]") -> StepRecord:
    return StepRecord(id=row["id"], deployment_id=row["deployment_id"], idx=row["idx"],
                      name=row["name"], kind=row["kind"], state=row["state"],
                      started_at=row["started_at"], finished_at=row["finished_at"],
                      exit_status=row["exit_status"], error=row["error"],
                      stderr_tail=(row["stderr_tail"] or "").splitlines())


def _lock(row: sqlite3.Row) -> Lock:
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
                     ) -> tuple[str | None, dict[str, Any] | None]:
    """The cluster id ``name`` means and, in the same statement, ``host``'s latest
    deployment with its steps (as ``_deployment`` and ``_step`` read them)."""
    cluster_sql, params = _cluster_query(name)
    host_sql = "NULL"
    if host is not None:
        host_sql = (f"(SELECT json_object({_json_pairs(DEPLOYMENT_COLUMNS)}, 'step_rows',"
                    f" (SELECT json_group_array(json_object({_json_pairs(STEP_COLUMNS)}))"
                    f" FROM (SELECT * FROM steps WHERE deployment_id = d.id ORDER BY id)))"
                    f" FROM deployments AS d WHERE hostname = ? ORDER BY id DESC LIMIT 1)")
        params.append(host)
    cluster, found = c.execute(f"SELECT ({cluster_sql}), {host_sql}", params).fetchone()
    return cluster, json.loads(found) if found else None


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
        "    WHERE state IN ('failed', 'cancelled') ORDER BY state = 'cancelled', id LIMIT ?)),"
        " (SELECT json_group_array(json_array(step, total, name, n, names)) FROM"
        "   (SELECT g.current_step AS step, json_array_length(d.steps) AS total,"
        "    json_extract(d.steps, '$[' || (g.current_step - 1) || '].step') AS name,"
        "    g.n AS n, g.names AS names"
        "    FROM (SELECT pipeline, current_step, count(*) AS n,"
        "          group_concat(hostname) AS names, min(id) AS sample"
        "          FROM (SELECT * FROM sel WHERE state = 'running' ORDER BY id)"
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
