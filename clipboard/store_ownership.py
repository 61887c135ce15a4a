"""Who drives each active deployment, and how a forced one leaves ``awaiting approval``:
the store's ownership and approval writes, each a plain function run in the writer
thread on its connection.

Several processes may share the store, so an owner changes only by a compare-and-set
on the owner itself (of two processes adopting one orphan, one wins), and a
deployment awaiting approval leaves that state only by a compare-and-set on the
state (of two people approving at once, one does). These writes see only driven
deployments: one awaiting approval has no owner to renew, release or ask to cancel.
See ``clipboard.owner`` for when an owner counts as gone.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from clipboard.owner import Owner
from clipboard.records import Deployment, State
from clipboard.store_rows import deployment_from
from clipboard.store_schema import DRIVEN_SQL
from clipboard.store_writer import transaction

EXPIRED = "nobody else approved the force in time"


def claim(conn: sqlite3.Connection, deployment_id: int, previous: str | None, owner: Owner,
          lease_until: float) -> bool:
    """Take a driven deployment over from the owner ``previous`` (its token); whether
    this one did."""
    cur = conn.execute(
        f"UPDATE deployments SET owner_id = ?, owner = ?, lease_until = ? WHERE id = ?"
        f" AND state IN {DRIVEN_SQL} AND owner_id IS ?",
        (owner.token, owner.to_json(), lease_until, deployment_id, previous))
    return cur.rowcount == 1


def renew(conn: sqlite3.Connection, owner: Owner, lease_until: float
          ) -> tuple[set[int], dict[int, str]]:
    """Extend ``owner``'s lease: the ids it still owns, and those another process asked
    to cancel (id → who asked)."""
    conn.execute(f"UPDATE deployments SET lease_until = ? WHERE owner_id = ?"
                 f" AND state IN {DRIVEN_SQL}", (lease_until, owner.token))
    rows = conn.execute(f"SELECT id, cancel_requested FROM deployments WHERE"
                        f" owner_id = ? AND state IN {DRIVEN_SQL}",
                        (owner.token,)).fetchall()
    return ({row[0] for row in rows},
            {row[0]: row[1] for row in rows if row[1] is not None})


def release(conn: sqlite3.Connection, owner: Owner) -> None:
    """Leave ``owner``'s driven deployments to whoever starts next, without a lease."""
    conn.execute(f"UPDATE deployments SET owner_id = NULL, lease_until = NULL WHERE"
                 f" owner_id = ? AND state IN {DRIVEN_SQL}", (owner.token,))


def request_cancel(conn: sqlite3.Connection, deployment_id: int, by: str) -> None:
    """Note that ``by`` asked to cancel it: its owner reads this when it renews."""
    conn.execute(f"UPDATE deployments SET cancel_requested = ? WHERE id = ?"
                 f" AND state IN {DRIVEN_SQL}", (by, deployment_id))


def approve(conn: sqlite3.Connection, deployment: Deployment, owner: Owner,
            lease_until: float, text: str, now: float) -> bool:
    """Queue a deployment awaiting approval under ``owner``, with ``text`` (the YAML of
    its clipboard) as its clipboard before step 1; whether it was still waiting."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE deployments SET state = ?, meta = ?, owner_id = ?, owner = ?,"
            " lease_until = ? WHERE id = ? AND state = ?",
            (State.QUEUED, json.dumps(deployment.meta), owner.token, owner.to_json(),
             lease_until, deployment.id, State.AWAITING_APPROVAL))
        if cur.rowcount != 1:
            return False
        conn.execute("INSERT INTO clipboards (deployment_id, after_step, label,"
                     " created_at, yaml) VALUES (?,?,?,?,?)",
                     (deployment.id, 0, "approved", now, text))
        return True


def end_wait(conn: sqlite3.Connection, deployment: Deployment, state: State,
             error: str | None, now: float) -> bool:
    """End a deployment awaiting approval in ``state``; whether it was still waiting."""
    return conn.execute(
        "UPDATE deployments SET state = ?, error = ?, finished_at = ?, meta = ?"
        " WHERE id = ? AND state = ?",
        (state, error, now, json.dumps(deployment.meta), deployment.id,
         State.AWAITING_APPROVAL)).rowcount == 1


def expire_approvals(conn: sqlite3.Connection, now: float, hostname: str | None = None
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
                     (State.APPROVAL_EXPIRED, now, EXPIRED, row["id"]))
    expired = [deployment_from(row) for row in rows]
    for d in expired:
        d.state, d.finished_at = State.APPROVAL_EXPIRED, now
        d.error = EXPIRED
    return expired
