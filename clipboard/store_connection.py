"""The store's SQLite file and the two threads that use it: one writer (with the
batching of ``clipboard.store_writer``) and one reader, each with its own connection.

SQLite in WAL mode, so readers (``status`` from chat) never wait for the writer (the
runner recording a step), and the event loop never touches SQLite. Clipboards are
stored as the YAML the workers saw, secrets included, so the file is created mode
0600 in a directory only jarvis may enter. Every way the file can be unusable (a
directory, a foreign or damaged file, no permission) is one line naming it.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from clipboard.errors import StoreError
from clipboard.store_schema import SCHEMA, upgrade
from clipboard.store_writer import BatchWriter

T = TypeVar("T")


def default_path() -> Path:
    """The file when no ``store.path`` is given: ``jarvis.db`` in the state directory."""
    from clipboard.config import state_dir
    return state_dir() / "jarvis.db"


class Connections:
    """The file's writer and reader threads; ``Store`` calls them with its queries."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self._writer = BatchWriter(self._checked)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-reader")
        self._rconn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open (creating or upgrading) the file; StoreError in one line when it cannot be."""
        try:
            await self._writer.run(self._open_writer)
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
            upgrade(conn)
        except BaseException:
            conn.close()
            raise
        self._writer.conn = conn

    async def close(self) -> None:
        def close_writer() -> None:
            if self._writer.conn is not None:
                self._writer.conn.close()
                self._writer.conn = None

        def close_reader() -> None:
            if self._rconn is not None:
                self._rconn.close()
                self._rconn = None

        self._writer.flush()
        await self._writer.run(close_writer)
        await asyncio.get_running_loop().run_in_executor(self._reader, close_reader)
        self._writer.executor.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def check_writable(self) -> None:
        """StoreError unless a write transaction can be begun now (``/readyz``): a full
        disk or a lock another process holds too long shows here, not at the next step."""
        def probe(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT count(*) FROM locks").fetchone()
        try:
            await self._write(probe)
        except sqlite3.Error as exc:
            raise StoreError(f"the store {self.path} cannot be written: {exc}") from None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer thread with the next batch; its result once committed."""
        return await self._writer.write(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._rconn is None:
                self._rconn = self._connect()
            try:
                return fn(self._rconn)
            except sqlite3.DatabaseError as exc:
                raise self._checked(exc) from None
        return await asyncio.get_running_loop().run_in_executor(self._reader, call)
