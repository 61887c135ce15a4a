"""The store's reads for the HTTP API and its metrics: deployments listed with filters
and a cursor, and deployments counted by state.

Apart from ``clipboard.store`` because they serve one client (``bot.http``) and have
one concern, lists over many deployments, which chat never asks for: chat pages one
host's history, the API pages the whole table. The page is cut by a cursor (``before``:
the id the previous page ended at) rather than an offset, so a page read while new
deployments are recorded neither repeats nor skips one, and page 500 costs what
page 1 costs (the primary key seeks to it).
"""
from __future__ import annotations

import sqlite3
from typing import Any

from clipboard.records import Deployment
from clipboard.store_connection import Connections
from clipboard.store_rows import deployment_from

MAX_PAGE = 200


def page_of(rows: list[Deployment], limit: int) -> tuple[list[Deployment], int | None]:
    """The first ``limit`` of ``rows`` (read newest first, one more than asked) and the
    cursor of the next page: the id to pass as ``before``, or None on the last page."""
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def listing(host: str | None, cluster: str | None, state: str | None, before: int | None,
            limit: int) -> tuple[str, list[Any]]:
    """The statement selecting one page (plus one row, to know whether more follow).
    ``cluster`` is a run (``shop#2``) or a name meaning every run of it (``shop``)."""
    where: list[str] = []
    params: list[Any] = []
    if host is not None:
        where.append("hostname = ?")
        params.append(host)
    if cluster is not None and "#" in cluster:
        where.append("cluster = ?")
        params.append(cluster)
    elif cluster is not None:
        where.append("cluster >= ? AND cluster < ?")
        params += [f"{cluster}#", f"{cluster}$"]
    if state is not None:
        where.append("state = ?")
        params.append(state)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return (f"SELECT * FROM deployments {clause} ORDER BY id DESC LIMIT ?",
            [*params, limit + 1])


class StoreQueries(Connections):
    """Mixed into ``Store``: the API's list and count reads."""

    async def deployments_page(self, *, host: str | None = None, cluster: str | None = None,
                               state: str | None = None, before: int | None = None,
                               limit: int = 50) -> tuple[list[Deployment], int | None]:
        """Deployments newest first, filtered, ``limit`` at most (≤ ``MAX_PAGE``), older
        than the id ``before``; and the cursor of the next page (None: no more)."""
        limit = max(1, min(limit, MAX_PAGE))
        query, params = listing(host, cluster, state, before, limit)
        rows = await self._read(lambda c: c.execute(query, params).fetchall())
        return page_of([deployment_from(row) for row in rows], limit)

    async def count_by_state(self) -> dict[str, int]:
        """How many deployments are in each state (``/metrics``)."""
        def read(c: sqlite3.Connection) -> dict[str, int]:
            return {str(state): int(n) for state, n in c.execute(
                "SELECT state, count(*) FROM deployments GROUP BY state")}
        return await self._read(read)
