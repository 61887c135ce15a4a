"""The store's one writer thread, which commits the writes asked for in one turn of the
event loop together.

Every write goes through one thread that owns the writing connection, so the loop
never touches SQLite. With 64 steps in flight, one transaction per write would
spend most of the writer's time committing and handing results back; instead the
writes queued in the same turn go to the thread together and commit as one
transaction, each in its own savepoint, so one failing write fails alone. Every
write is still committed before its ``await`` returns.
"""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]
Outcome = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


class BatchWriter:
    """The writer thread and its connection (``conn``, set by whoever opens the store).

    ``checked`` turns an exception a write raised into the one the caller sees (the
    store names a damaged file in one line)."""

    def __init__(self, checked: Callable[[Exception], Exception]) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self.conn: sqlite3.Connection | None = None
        self._checked = checked
        self._batch: list[tuple[Write, asyncio.Future[Any]]] = []

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the writer thread outside any batch (opening, closing)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer thread with the next batch; its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._batch:
            loop.call_soon(self.flush)
        self._batch.append((fn, future))
        result: T = await future
        return result

    def flush(self) -> None:
        """Hand the writes queued so far to the writer thread."""
        batch, self._batch = self._batch, []
        if batch:
            self.executor.submit(self._commit_batch, batch, asyncio.get_running_loop())

    def _commit_batch(self, batch: list[tuple[Write, asyncio.Future[Any]]],
                      loop: asyncio.AbstractEventLoop) -> None:
        """Writer thread: one transaction, a savepoint per write; answer the loop once."""
        outcomes: list[Outcome] = []
        conn = self.conn
        try:
            assert conn is not None, "store not opened"
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                conn.execute("SAVEPOINT write")
                try:
                    outcome = fn(conn)
                except Exception as exc:  # noqa: BLE001 - it is the caller's, via its future
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                    outcomes.append((future, None, self._checked(exc)))
                    continue
                conn.execute("RELEASE write")
                outcomes.append((future, outcome, None))
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - every caller in the batch gets it
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, self._checked(exc)) for _, future in batch]
        loop.call_soon_threadsafe(_settle, outcomes)


class transaction:
    """All or nothing for a write's statements (a savepoint: writes run inside a batch)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("SAVEPOINT tx")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type:
            self.conn.execute("ROLLBACK TO tx")
        self.conn.execute("RELEASE tx")


def _settle(outcomes: list[Outcome]) -> None:
    """On the loop: answer each write's ``await`` (unless its caller gave up waiting)."""
    for future, outcome, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)
