"""What ``status`` reads from the store, each answer in one statement.

``status`` is asked while the loop, the writer and 64 running steps compete for the
GIL, and the reader thread waits for the GIL again after every statement and every
row. So SQLite does the counting and grouping and returns one row of JSON (two for
a cluster: which run, then its summary), however many hosts the answer covers.
These are plain functions run in the store's reader thread on its connection.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from clipboard.records import (
    ATTENTION_ORDER,
    NAMES_SHOWN,
    UNDER_WAY,
    Lock,
    State,
    StatusAnswer,
    Summary,
    sql_list,
)
from clipboard.store_rows import deployment_from, lock_from, step_from
from clipboard.store_schema import DEPLOYMENT_COLUMNS, LOCK_COLUMNS, STEP_COLUMNS, STOPPED_SQL

# records.attention_rank, in SQL: failures first, then what rollback left, then the cancelled.
ATTENTION_SQL = ("CASE state " + " ".join(f"WHEN '{state}' THEN {rank}"
                                          for rank, state in enumerate(ATTENTION_ORDER))
                 + f" ELSE {len(ATTENTION_ORDER)} END")
UNDER_WAY_SQL = sql_list(UNDER_WAY)


def status(c: sqlite3.Connection, name: str | None, labels: dict[str, str], limit: int,
           host: str | None, live: frozenset[str]) -> StatusAnswer:
    """``name`` as a cluster, else ``host``'s latest deployment and steps, else the
    summary of the hosts ``labels`` select (see ``Store.status_of``)."""
    cluster, found, lock = cluster_or_host(c, name, host) if name else (None, None, None)
    if name and cluster is None:
        if host is None:
            return StatusAnswer(missing=True)
        if found is None:
            return StatusAnswer(lock=lock)
        return StatusAnswer(deployment=deployment_from(found), lock=lock,
                            steps=[step_from(step) for step in found["step_rows"]])
    if cluster in live:
        return StatusAnswer(cluster=cluster, live=True)
    return StatusAnswer(cluster=cluster, summary=summary(c, labels, cluster, limit))


def selection(labels: dict[str, str], cluster: str | None) -> tuple[str, list[Any]]:
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


def cluster_named(c: sqlite3.Connection, name: str) -> str | None:
    """The cluster id ``name`` means (see ``Store.latest_cluster``)."""
    row = c.execute(*cluster_query(name)).fetchone()
    return row[0] if row else None


def cluster_query(name: str) -> tuple[str, list[Any]]:
    """The statement selecting the cluster id ``name`` means (see ``latest_cluster``)."""
    if "#" in name:
        return "SELECT cluster FROM deployments WHERE cluster = ? LIMIT 1", [name]
    return (("SELECT cluster FROM deployments WHERE cluster >= ? AND cluster < ?"
             " ORDER BY id DESC LIMIT 1"), [f"{name}#", f"{name}$"])


def cluster_or_host(c: sqlite3.Connection, name: str, host: str | None
                    ) -> tuple[str | None, dict[str, Any] | None, Lock | None]:
    """The cluster id ``name`` means and, in the same statement, ``host``'s latest
    deployment with its steps (as ``deployment_from`` and ``step_from`` read them) and
    its lock."""
    cluster_sql, params = cluster_query(name)
    host_sql = lock_sql = "NULL"
    if host is not None:
        host_sql = (f"(SELECT json_object({json_pairs(DEPLOYMENT_COLUMNS)}, 'step_rows',"
                    f" (SELECT json_group_array(json_object({json_pairs(STEP_COLUMNS)}))"
                    f" FROM (SELECT * FROM steps WHERE deployment_id = d.id ORDER BY id)))"
                    f" FROM deployments AS d WHERE hostname = ? ORDER BY id DESC LIMIT 1)")
        lock_sql = (f"(SELECT json_object({json_pairs(LOCK_COLUMNS)}) FROM locks"
                    f" WHERE hostname = ?)")
        params += [host, host]
    cluster, found, lock = c.execute(f"SELECT ({cluster_sql}), {host_sql}, {lock_sql}",
                                     params).fetchone()
    return (cluster, json.loads(found) if found else None,
            lock_from(json.loads(lock)) if lock else None)


def json_pairs(columns: tuple[str, ...]) -> str:
    """``'id', id, 'hostname', hostname, …``: a row as ``json_object``'s arguments."""
    return ", ".join(f"'{column}', {column}" for column in columns)


def summary(c: sqlite3.Connection, labels: dict[str, str], cluster: str | None,
            limit: int) -> Summary:
    """Counted and grouped by SQLite in one statement: the counts, the failed and
    cancelled hosts, the running ones grouped by step (one pipeline's hosts at one
    step share its step name, read from one of them) and the queued."""
    where, params = selection(labels, cluster)
    counts, attention, running, queued = c.execute(
        f"WITH sel AS NOT MATERIALIZED (SELECT * FROM deployments WHERE {where})"
        " SELECT (SELECT json_group_object(state, n) FROM"
        "   (SELECT state, count(*) AS n FROM sel GROUP BY state)),"
        " (SELECT json_group_array(json(one)) FROM"
        f"   (SELECT json_object({json_pairs(DEPLOYMENT_COLUMNS)}) AS one FROM sel"
        f"    WHERE state IN {STOPPED_SQL} ORDER BY {ATTENTION_SQL}, id LIMIT ?)),"
        " (SELECT json_group_array(json_array(step, total, name, n, names)) FROM"
        "   (SELECT g.current_step AS step, json_array_length(d.steps) AS total,"
        "    json_extract(d.steps, '$[' || (g.current_step - 1) || '].step') AS name,"
        "    g.n AS n, g.names AS names"
        "    FROM (SELECT pipeline, current_step, count(*) AS n,"
        "          group_concat(hostname) AS names, min(id) AS sample"
        f"          FROM (SELECT * FROM sel WHERE state IN {UNDER_WAY_SQL}"
        "                ORDER BY id)"
        "          GROUP BY pipeline, current_step) AS g"
        "    JOIN deployments AS d ON d.id = g.sample ORDER BY g.n DESC, g.current_step)),"
        " (SELECT json_group_array(hostname) FROM"
        f"   (SELECT hostname FROM sel WHERE state = '{State.QUEUED}' ORDER BY id LIMIT ?))",
        (*params, limit, NAMES_SHOWN)).fetchone()
    counts = json.loads(counts)
    return Summary(counts, sum(counts.values()),
                   [deployment_from(one) for one in json.loads(attention)],
                   [(step, total, name, n, names.split(",")[:NAMES_SHOWN])
                    for step, total, name, n, names in json.loads(running)],
                   json.loads(queued))
