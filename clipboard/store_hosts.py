"""Which deployments may start: the store's writes that take a host (a new deployment,
a cluster, a retry) and the operator locks that keep one from being taken, each a
plain function run in the writer thread on its connection.

What must hold across processes sharing the store is decided here, in the
transaction that writes, never from a process's memory: the partial unique index
(see ``clipboard.store_schema``) lets at most one deployment per host be active, so
of two processes racing to start one, exactly one insert succeeds; and the locks are
read in the same transaction that starts a deployment.
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from clipboard import document
from clipboard.errors import HostBusy, HostLocked
from clipboard.owner import Owner
from clipboard.records import Deployment, Lock
from clipboard.store_ownership import expire_approvals
from clipboard.store_rows import deployment_from, lock_from
from clipboard.store_schema import ACTIVE_SQL
from clipboard.store_writer import transaction

CHUNK = 500  # hostnames per IN (…): well under SQLite's limit on bound parameters


def create_deployment(conn: sqlite3.Connection, row: dict[str, Any], cluster: str | None,
                      owner: Owner | None, lease_until: float | None) -> Deployment:
    """Record one deployment (``row``: ``store_rows.new_row``), unless its host is
    locked or busy."""
    with transaction(conn):
        refuse_locked(conn, [row["hostname"]])
        expire_approvals(conn, time.time(), row["hostname"])
        return insert(conn, row, cluster, owner, lease_until)


def create_cluster(conn: sqlite3.Connection, name: str, rows: list[dict[str, Any]],
                   owner: Owner | None, lease_until: float | None
                   ) -> tuple[str, list[Deployment]]:
    """Record every host of a cluster under the next free id ``<name>#<n>``, all or none."""
    with transaction(conn):
        refuse_locked(conn, [row["hostname"] for row in rows])
        expire_approvals(conn, time.time())
        found = conn.execute(
            "SELECT cluster FROM deployments WHERE cluster >= ? AND cluster < ?",
            (f"{name}#", f"{name}$")).fetchall()
        numbers = [int(r[0].rpartition("#")[2]) for r in found
                   if r[0].rpartition("#")[2].isdigit()]
        cluster_id = f"{name}#{max(numbers, default=0) + 1}"
        try:
            return cluster_id, [insert(conn, row, cluster_id, owner, lease_until, check=False)
                                for row in rows]
        except sqlite3.IntegrityError:
            raise busy_error(conn, [row["hostname"] for row in rows],
                             f"cluster {name}: ") from None


def reactivate(conn: sqlite3.Connection, deployments: list[Deployment], owner: Owner,
               lease_until: float, what: str) -> None:
    """Make stopped deployments active again under ``owner``, all or none: each must
    still be its host's latest deployment, unlocked and not busy."""
    with transaction(conn):
        hosts = [d.hostname for d in deployments]
        refuse_locked(conn, hosts)
        newer = [d.hostname for d in deployments if conn.execute(
            "SELECT 1 FROM deployments WHERE hostname = ? AND id > ? LIMIT 1",
            (d.hostname, d.id)).fetchone()]
        if newer:
            raise HostBusy(f"{what}not retried: {', '.join(newer[:10])} deployed again since")
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
            raise busy_error(conn, hosts, what) from None


def add_lock(conn: sqlite3.Connection, hostname: str, owner: str, reason: str
             ) -> tuple[Lock, bool]:
    """Lock ``hostname``: the lock, and whether it is new (one already there is kept)."""
    cur = conn.execute("INSERT OR IGNORE INTO locks (hostname, owner, reason, created_at)"
                       " VALUES (?,?,?,?)", (hostname, owner, reason, time.time()))
    return lock_from(conn.execute("SELECT * FROM locks WHERE hostname = ?",
                                  (hostname,)).fetchone()), cur.rowcount == 1


def remove_lock(conn: sqlite3.Connection, hostname: str) -> Lock | None:
    """Unlock ``hostname``; the lock that was there, or None."""
    with transaction(conn):
        row = conn.execute("SELECT * FROM locks WHERE hostname = ?", (hostname,)).fetchone()
        conn.execute("DELETE FROM locks WHERE hostname = ?", (hostname,))
    return lock_from(row) if row else None


def insert(conn: sqlite3.Connection, row: dict[str, Any], cluster: str | None,
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
        raise busy_error(conn, [row["hostname"]]) from None
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


def refuse_locked(conn: sqlite3.Connection, hostnames: list[str]) -> None:
    """HostLocked naming every locked host among ``hostnames``, who holds it and why."""
    locked: list[Lock] = []
    for start in range(0, len(hostnames), CHUNK):
        chunk = hostnames[start:start + CHUNK]
        locked += [lock_from(row) for row in conn.execute(
            f"SELECT * FROM locks WHERE hostname IN ({','.join('?' * len(chunk))})"
            " ORDER BY hostname", chunk)]
    if not locked:
        return
    if len(hostnames) == 1:
        raise HostLocked(f"{locked[0].describe()}; unlock {locked[0].hostname} first")
    shown = "; ".join(lock.describe() for lock in locked[:5])
    more = f"; and {len(locked) - 5} more" if len(locked) > 5 else ""
    raise HostLocked(f"{shown}{more}; nothing was started")


def busy_error(conn: sqlite3.Connection, hostnames: list[str], what: str = "") -> HostBusy:
    """HostBusy naming the active deployments among ``hostnames`` and their owners."""
    busy: list[Deployment] = []
    for start in range(0, len(hostnames), CHUNK):
        chunk = hostnames[start:start + CHUNK]
        busy += [deployment_from(row) for row in conn.execute(
            f"SELECT * FROM deployments WHERE state IN {ACTIVE_SQL} AND hostname IN"
            f" ({','.join('?' * len(chunk))}) ORDER BY id", chunk)]
    if len(hostnames) == 1 and busy:
        d = busy[0]
        return HostBusy(f"{d.hostname} is being deployed by {d.driver()}; wait for it or "
                        f"cancel {d.hostname}")
    shown = "; ".join(f"{d.hostname} by {d.driver()}" for d in busy[:5])
    more = f"; and {len(busy) - 5} more" if len(busy) > 5 else ""
    return HostBusy(f"{what}{shown}{more} already being deployed; nothing was started")
