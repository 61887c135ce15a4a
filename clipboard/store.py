"""The state store: every deployment, every step, every clipboard version, and who
owns each active deployment — the async API the bot, engine and runner call.

Each method hands one query to the store's reader or writer thread
(``clipboard.store_connection``; writes of one turn of the loop commit together,
see ``clipboard.store_writer``), so the event loop never touches SQLite, and every
write is committed before its ``await`` returns. Serialising (a new deployment's
row, a clipboard's YAML) happens here, before the write is queued, so the one
writer thread every step waits on only runs SQL.

Several processes may share the file (a bot and a ``jarvis deploy``). What must
hold across them is decided in the transaction that writes, never from a
process's memory: which deployments may start (``clipboard.store_hosts``), who
drives them and how a forced one leaves ``awaiting approval``
(``clipboard.store_ownership``). The tables are in ``clipboard.store_schema``, the
``status`` queries in ``clipboard.store_status``, the HTTP API's lists in
``clipboard.store_queries``; the step and clipboard records
and the simple reads are single statements, kept here.
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from clipboard import document, redact
from clipboard import store_hosts as hosts
from clipboard import store_ownership as ownership
from clipboard import store_status as status
from clipboard.owner import Owner
from clipboard.records import (
    ClipboardVersion,
    Deployment,
    Lock,
    State,
    StatusAnswer,
    StepKind,
    StepRecord,
    StepState,
)
from clipboard.steps import Step
from clipboard.store_events import EventStore
from clipboard.store_queries import StoreQueries
from clipboard.store_rows import deployment_from, lock_from, new_row, step_from
from clipboard.store_schema import ACTIVE_SQL, DRIVEN_SQL
from clipboard.store_writer import transaction


class Store(StoreQueries, EventStore):
    """Async facade over one SQLite file (the event log's queries: ``EventStore``;
    the HTTP API's lists: ``StoreQueries``)."""

    # -- starting deployments -------------------------------------------------------------
    async def create_deployment(self, *, hostname: str, source: str, pipeline: str,
                                steps: tuple[Step, ...], clipboard: dict[str, Any],
                                rollback: bool = False, requester: str | None = None,
                                reply_to: dict[str, Any] | None = None,
                                source_kind: str | None = None, source_sha256: str | None = None,
                                fetched_at: float | None = None, cluster: str | None = None,
                                meta: dict[str, Any] | None = None, state: State = State.QUEUED,
                                owner: Owner | None = None, lease_until: float | None = None
                                ) -> Deployment:
        """Record a deployment owned by ``owner`` (none: any process may take it up).

        HostLocked when an operator locked the host, HostBusy naming the deployment
        and its owner when the host has an active one — both decided in the
        inserting transaction, so they hold against every other process."""
        row = new_row({"hostname": hostname, "source": source, "pipeline": pipeline,
                       "steps": steps, "clipboard": clipboard, "rollback": rollback,
                       "requester": requester, "reply_to": reply_to, "source_kind": source_kind,
                       "source_sha256": source_sha256, "fetched_at": fetched_at, "meta": meta,
                       "state": state})
        return await self._write(
            lambda conn: hosts.create_deployment(conn, row, cluster, owner, lease_until))

    async def create_cluster(self, name: str, specs: list[dict[str, Any]], *,
                             owner: Owner | None = None, lease_until: float | None = None
                             ) -> tuple[str, list[Deployment]]:
        """Record every host of a cluster under a new cluster id ``<name>#<n>``, at once:
        all or none (a locked or busy host refuses the whole cluster).

        The id is chosen in the same transaction as the inserts, so two deployments
        of the same cluster never share one. ``specs`` are ``create_deployment``'s
        keyword arguments (without ``cluster`` and the owner).
        """
        rows = [new_row(spec) for spec in specs]
        return await self._write(
            lambda conn: hosts.create_cluster(conn, name, rows, owner, lease_until))

    async def reactivate(self, deployments: list[Deployment], *, owner: Owner,
                         lease_until: float, what: str = "") -> None:
        """Make stopped deployments active again under ``owner`` (a retry), all or none:
        each must still be its host's latest deployment, unlocked and not busy."""
        await self._write(
            lambda conn: hosts.reactivate(conn, deployments, owner, lease_until, what))

    async def add_lock(self, hostname: str, owner: str, reason: str) -> tuple[Lock, bool]:
        """Lock ``hostname``: the lock, and whether it is new (one already there is kept)."""
        return await self._write(lambda conn: hosts.add_lock(conn, hostname, owner, reason))

    async def remove_lock(self, hostname: str) -> Lock | None:
        """Unlock ``hostname``; the lock that was there, or None."""
        return await self._write(lambda conn: hosts.remove_lock(conn, hostname))

    # -- ownership and approval -----------------------------------------------------------
    async def claim(self, deployment: Deployment, owner: Owner, lease_until: float
                    ) -> bool:
        """Take an active deployment over from its previous owner (compare-and-set: of
        two processes adopting one orphan, one wins); whether this one did."""
        previous = deployment.owner.token if deployment.owner else None
        claimed = await self._write(
            lambda conn: ownership.claim(conn, deployment.id, previous, owner, lease_until))
        if claimed:
            deployment.owner, deployment.lease_until = owner, lease_until
        return claimed

    async def renew(self, owner: Owner, lease_until: float) -> tuple[set[int], dict[int, str]]:
        """Extend ``owner``'s lease on its active deployments: the ids it still owns, and
        those of them another process asked to cancel (id → who asked)."""
        return await self._write(lambda conn: ownership.renew(conn, owner, lease_until))

    async def release(self, owner: Owner) -> None:
        """Give up ``owner``'s active deployments (a clean stop): the next process that
        starts takes them up at once instead of waiting for the lease."""
        await self._write(lambda conn: ownership.release(conn, owner))

    async def request_cancel(self, deployment_id: int, by: str) -> None:
        """Ask the process that owns a deployment to cancel it (it looks at its renewal)."""
        await self._write(lambda conn: ownership.request_cancel(conn, deployment_id, by))

    async def approve(self, deployment: Deployment, *, owner: Owner, lease_until: float,
                      clipboard: dict[str, Any]) -> bool:
        """Start a deployment awaiting approval: owned by ``owner``, queued, with
        ``deployment.meta`` (the approval) and ``clipboard`` (its ``jarvis:`` block
        saying who approved) as the clipboard before step 1. Whether it was still
        waiting: false when someone approved, cancelled or expired it first."""
        text = document.dump(clipboard)
        approved = await self._write(lambda conn: ownership.approve(
            conn, deployment, owner, lease_until, text, time.time()))
        if approved:
            deployment.state, deployment.owner = State.QUEUED, owner
            deployment.lease_until = lease_until
        return approved

    async def end_wait(self, deployment: Deployment, state: State, error: str | None
                       ) -> bool:
        """End a deployment awaiting approval without running it (cancelled, expired),
        keeping ``deployment.meta``; whether it was still waiting."""
        now = time.time()
        ended = await self._write(
            lambda conn: ownership.end_wait(conn, deployment, state, error, now))
        if ended:
            deployment.state, deployment.error, deployment.finished_at = state, error, now
        return ended

    async def expire_approvals(self, now: float | None = None) -> list[Deployment]:
        """Mark every deployment whose approval window has passed ``approval expired``;
        the ones this call marked."""
        at = time.time() if now is None else now
        return await self._write(lambda conn: ownership.expire_approvals(conn, at))

    # -- steps and clipboards ------------------------------------------------------------
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

    async def step_started(self, deployment_id: int, idx: int, name: str,
                           kind: StepKind = StepKind.STEP,
                           *, current_step: int | None = None, attempt: int = 1) -> int:
        now = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                cur = conn.execute(
                    "INSERT INTO steps (deployment_id, idx, name, kind, state, started_at,"
                    " attempt) VALUES (?,?,?,?,?,?,?)",
                    (deployment_id, idx, name, kind, StepState.RUNNING, now, attempt))
                if current_step is not None:
                    conn.execute("UPDATE deployments SET current_step = ?, state = ?,"
                                 " started_at = COALESCE(started_at, ?) WHERE id = ?",
                                 (current_step, State.RUNNING, now, deployment_id))
                return int(cur.lastrowid or 0)
        return await self._write(insert)

    async def step_finished(self, step_id: int, *, state: StepState, exit_status: int | None,
                            error: str | None, stderr_tail: list[str], finished_at: float,
                            deployment_id: int, after_step: int | None,
                            clipboard: dict[str, Any] | None, label: str = "",
                            text: str | None = None, attempt: int = 1,
                            worker: str | None = None) -> None:
        """Record a step's end and, in the same transaction, the clipboard after it.

        ``text`` is that clipboard's YAML when the caller has it already (what the
        worker printed): dumping it again would cost more than the step.
        """
        if clipboard is None:
            text = None
        elif text is None:
            text = document.dump(clipboard)

        def update(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("UPDATE steps SET state = ?, exit_status = ?, error = ?, stderr_tail = ?,"
                             " finished_at = ?, worker = ? WHERE id = ?",
                             (state, exit_status, error, "\n".join(stderr_tail), finished_at,
                              worker, step_id))
                if text is not None and after_step is not None:
                    conn.execute("INSERT INTO clipboards (deployment_id, after_step, label,"
                                 " created_at, yaml, attempt) VALUES (?,?,?,?,?,?)",
                                 (deployment_id, after_step, label, finished_at, text, attempt))
        await self._write(update)

    async def step_worker(self, step_id: int, worker: str) -> None:
        """Record the Celery worker that took a running step."""
        await self._write(lambda conn: conn.execute(
            "UPDATE steps SET worker = ? WHERE id = ?", (worker, step_id)))

    async def interrupted_steps(self, deployment_id: int) -> None:
        """Mark steps left 'running' by a jarvis that died as interrupted."""
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE steps SET state = ?, finished_at = ?, error = ?"
                         " WHERE deployment_id = ? AND state = ?",
                         (StepState.INTERRUPTED, time.time(), "jarvis stopped during this step",
                          deployment_id, StepState.RUNNING))
        await self._write(update)

    # -- reads ----------------------------------------------------------------------------
    async def locks(self) -> list[Lock]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM locks ORDER BY hostname").fetchall())
        return [lock_from(row) for row in rows]

    async def deployment(self, deployment_id: int) -> Deployment | None:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchall())
        return deployment_from(rows[0]) if rows else None

    async def latest(self, hostname: str) -> Deployment | None:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE hostname = ? ORDER BY id DESC LIMIT 1",
            (hostname,)).fetchall())
        return deployment_from(rows[0]) if rows else None

    async def history(self, hostname: str, limit: int = 10) -> list[Deployment]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE hostname = ? ORDER BY id DESC LIMIT ?",
            (hostname, limit)).fetchall())
        return [deployment_from(row) for row in rows]

    async def history_page(self, hostname: str, page: int, size: int
                           ) -> tuple[list[Deployment], int]:
        """Page ``page`` (1 = newest) of ``size`` deployments of ``hostname``, newest first,
        and how many it has in all: read together, so "page 2 of 5" matches the page."""
        def read(c: sqlite3.Connection) -> tuple[list[Deployment], int]:
            total = c.execute("SELECT count(*) FROM deployments WHERE hostname = ?",
                              (hostname,)).fetchone()[0]
            rows = c.execute("SELECT * FROM deployments WHERE hostname = ? ORDER BY id DESC"
                             " LIMIT ? OFFSET ?", (hostname, size, (page - 1) * size)).fetchall()
            return [deployment_from(row) for row in rows], int(total)
        return await self._read(read)

    async def workers_of(self, deployment_ids: list[int]) -> dict[int, list[str]]:
        """The Celery workers that ran steps of these deployments, in the order first used."""
        marks = ",".join("?" * len(deployment_ids))
        rows = await self._read(lambda c: c.execute(
            f"SELECT deployment_id, worker FROM steps WHERE deployment_id IN ({marks})"
            " AND worker IS NOT NULL GROUP BY deployment_id, worker ORDER BY min(id)",
            deployment_ids).fetchall())
        found: dict[int, list[str]] = {}
        for deployment_id, worker in rows:
            found.setdefault(deployment_id, []).append(worker)
        return found

    async def active(self) -> list[Deployment]:
        """Every driven deployment, whoever owns it (none awaiting approval: nobody may
        take those up)."""
        rows = await self._read(lambda c: c.execute(
            f"SELECT * FROM deployments WHERE state IN {DRIVEN_SQL} ORDER BY id").fetchall())
        return [deployment_from(row) for row in rows]

    async def active_of(self, hostname: str) -> Deployment | None:
        rows = await self._read(lambda c: c.execute(
            f"SELECT * FROM deployments WHERE hostname = ? AND state IN {ACTIVE_SQL}",
            (hostname,)).fetchall())
        return deployment_from(rows[0]) if rows else None

    async def lock_of(self, hostname: str) -> Lock | None:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM locks WHERE hostname = ?", (hostname,)).fetchall())
        return lock_from(rows[0]) if rows else None

    async def by_cluster(self, cluster: str) -> list[Deployment]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM deployments WHERE cluster = ? ORDER BY id", (cluster,)).fetchall())
        return [deployment_from(row) for row in rows]

    async def latest_cluster(self, name: str) -> str | None:
        """The cluster id ``name`` means: itself when it is one (``shop#2``), else the
        newest run of the cluster named so; None when there is none."""
        return await self._read(lambda c: status.cluster_named(c, name))

    async def matching(self, labels: dict[str, str], cluster: str | None = None
                       ) -> list[Deployment]:
        """Deployments whose labels (``meta.labels``) equal ``labels``: those of the
        cluster run ``cluster``, or else the latest deployment of every host."""
        where, params = status.selection(labels, cluster)
        query = f"SELECT * FROM deployments WHERE {where} ORDER BY id"
        rows = await self._read(lambda c: c.execute(query, params).fetchall())
        return [deployment_from(row) for row in rows]

    async def status_of(self, name: str | None, labels: dict[str, str], limit: int,
                        host: str | None, live: frozenset[str] = frozenset()
                        ) -> StatusAnswer:
        """Everything ``status`` needs: ``name`` as a cluster, else ``host``'s latest
        deployment and steps, else the summary of the hosts ``labels`` select. A
        cluster run in ``live`` is only named: the caller summarises it from memory
        (so ``live`` must be empty when ``labels`` select). One statement per answer,
        whatever it covers (see ``clipboard.store_status``)."""
        return await self._read(lambda c: status.status(c, name, labels, limit, host, live))

    async def reached(self, deployment_id: int, step: str) -> bool:
        """Whether the deployment ever finished ``step`` successfully."""
        rows = await self._read(lambda c: c.execute(
            "SELECT 1 FROM steps WHERE deployment_id = ? AND name = ? AND kind = ? AND state = ?"
            " LIMIT 1", (deployment_id, step, StepKind.STEP, StepState.OK)).fetchall())
        return bool(rows)

    async def steps(self, deployment_id: int) -> list[StepRecord]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM steps WHERE deployment_id = ? ORDER BY id", (deployment_id,)).fetchall())
        return [step_from(row) for row in rows]

    async def clipboard(self, deployment_id: int, after_step: int | None = None
                        ) -> dict[str, Any] | None:
        """The clipboard after step N (0 = before the first step); None: the latest."""
        if after_step is None:
            query: tuple[str, tuple[int, ...]] = (
                "SELECT yaml FROM clipboards WHERE deployment_id = ? ORDER BY id DESC LIMIT 1",
                (deployment_id,))
        else:
            query = (("SELECT yaml FROM clipboards WHERE deployment_id = ? AND after_step = ?"
                      " ORDER BY id DESC LIMIT 1"), (deployment_id, after_step))
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
