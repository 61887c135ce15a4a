"""The step's pipes, served on the event loop without ever blocking it.

A worker's stdout is collected up to a limit (past it the step is stopped),
its stderr keeps only its tail (a chatty worker cannot fill memory), and the
clipboard is written to its stdin as the pipe takes it — a worker that never
reads its stdin must not hold the loop.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os

log = logging.getLogger(__name__)


class PipeReader:
    """Collect a non-blocking pipe on the loop until EOF, up to a limit."""

    def __init__(self, fd: int, limit: int, keep_tail: bool = False) -> None:
        self.fd = fd
        self.limit = limit
        self.keep_tail = keep_tail
        self.chunks: list[bytes] = []
        self.size = 0
        self.loop = asyncio.get_running_loop()
        self.eof: asyncio.Future[None] = self.loop.create_future()
        self.overflowed: asyncio.Future[None] = self.loop.create_future()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close()
            return
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.size > self.limit:
            if self.keep_tail:
                data = b"".join(self.chunks)[-self.limit:]
                self.chunks, self.size = [data], len(data)
            elif not self.overflowed.done():
                self.overflowed.set_result(None)
                self._close()

    def _close(self) -> None:
        if not self.eof.done():
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.eof.set_result(None)

    async def finished(self, grace: float) -> None:
        if self.eof.done():  # the usual case, and a timer per pipe per step is not free
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.eof), grace)
        except TimeoutError:
            log.warning("a step's pipe stayed open after the step ended; closed")
            self._close()

    def data(self) -> bytes:
        return b"".join(self.chunks)

    def text(self) -> str:
        return self.data().decode("utf-8", errors="replace")


class PipeWriter:
    """Feed the clipboard to a worker's stdin without blocking; a worker may not read it."""

    def __init__(self, fd: int, data: bytes) -> None:
        self.fd = fd
        self.data = memoryview(data)
        self.loop = asyncio.get_running_loop()
        self.closed = False
        os.set_blocking(fd, False)
        if not self._write():
            self.loop.add_writer(fd, self._on_writable)

    def _write(self) -> bool:
        """Write what fits; True when done (all written, or the reader went away)."""
        try:
            while self.data:
                written = os.write(self.fd, self.data)
                self.data = self.data[written:]
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EBADF):
                log.warning("writing a clipboard to a worker failed: %s", exc)
        self.close()
        return True

    def _on_writable(self) -> None:
        self._write()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_writer(self.fd)
            os.close(self.fd)
