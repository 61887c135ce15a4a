"""The bot's end of a ``clipboard.forkserver``: the client the runner spawns steps through.

A fork server is a process with the worker modules already imported; asking it
for a child (over a SOCK_SEQPACKET socket, the child's stdin/stdout/stderr
passed by SCM_RIGHTS) costs a fork instead of a fresh interpreter. This module
only speaks that protocol — starting the server, matching replies to requests,
learning exits, failing every waiter when the server dies — and knows nothing of
clipboards or timeouts, which are ``clipboard.runner``'s.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from clipboard.config import Config
from clipboard.errors import JarvisError

log = logging.getLogger(__name__)


@dataclass
class Child:
    """A step's process as the fork server reported it; ``exited`` gets its exit status."""

    pid: int
    exited: asyncio.Future[int]


class ForkServer:
    """The bot's end of one ``clipboard.forkserver``: asks it for children, learns their exits."""

    def __init__(self, config: Config, modules: list[str]) -> None:
        self.config = config
        self.modules = modules
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[Child]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._starting: asyncio.Lock | None = None
        self._send_lock: asyncio.Lock | None = None

    @property
    def started(self) -> bool:
        return self._sock is not None

    async def ensure_started(self) -> None:
        if self._sock is not None:
            return
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            if self._sock is None:
                await self._start()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        if self.config.path is not None:
            env["JARVIS_CONFIG"] = str(self.config.path)
        # Popen forks and execs: off the loop, which may be running other steps' pipes.
        self._proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "clipboard.forkserver", str(theirs.fileno()), *self.modules],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._hello = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            hello = await asyncio.wait_for(self._hello, 60)
        except TimeoutError:
            self._lost("the fork server did not start within 60 s")
            raise JarvisError("the worker fork server did not start") from None
        for module, error in hello.get("import_errors", {}).items():
            log.warning("worker module %s is unavailable: %s", module, error)

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(f"fork server connection failed: {exc}")
                return
            if not data:
                self._lost("the worker fork server exited")
                return
            self._dispatch(json.loads(data))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "hello" in message:
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(message["hello"])
        elif "exit" in message:
            # The server always sends a child's pid before its exit, so the future exists.
            future = self._exits.pop(message["exit"], None)
            if future is not None and not future.done():
                future.set_result(message["status"])
        elif "id" in message:
            reply = self._replies.pop(message["id"], None)
            if reply is None or reply.done():
                return
            if "pid" in message:
                exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                self._exits[message["pid"]] = exited
                reply.set_result(Child(message["pid"], exited))
            else:
                reply.set_exception(JarvisError(message.get("error", "the fork server refused")))

    def _lost(self, reason: str) -> None:
        """The server is gone: fail everything waiting on it; the next spawn restarts it."""
        if self._sock is None:
            return
        log.error("%s", reason)
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        error = JarvisError(reason)
        pending: list[asyncio.Future[Any]] = [*self._replies.values(), *self._exits.values()]
        for future in pending:
            if not future.done():
                future.set_exception(error)
        self._replies.clear()
        self._exits.clear()
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(error)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            asyncio.get_running_loop().run_in_executor(None, self._proc.wait)

    async def spawn(self, step: str, executable: str | None, fds: tuple[int, int, int]) -> Child:
        await self.ensure_started()
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        self._next_id += 1
        request_id = self._next_id
        reply: asyncio.Future[Child] = loop.create_future()
        self._replies[request_id] = reply
        payload = json.dumps({"id": request_id, "step": step, "exec": executable}).encode()
        await self._send(payload, fds)
        return await reply

    async def _send(self, payload: bytes, fds: tuple[int, int, int]) -> None:
        """Send one request; senders queue on a lock, since a socket has one writer callback."""
        loop = asyncio.get_running_loop()
        self._send_lock = self._send_lock or asyncio.Lock()
        async with self._send_lock:
            while True:
                sock = self._sock
                if sock is None:
                    raise JarvisError("the worker fork server exited")
                try:
                    socket.send_fds(sock, [payload], list(fds))
                    return
                except BlockingIOError:
                    writable: asyncio.Future[None] = loop.create_future()
                    loop.add_writer(sock.fileno(), functools.partial(_wake, writable))
                    try:
                        await writable
                    finally:
                        loop.remove_writer(sock.fileno())

    async def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._proc.wait), 5)
            except TimeoutError:
                self._proc.kill()
            self._proc = None


def _wake(future: asyncio.Future[None]) -> None:
    """The socket is writable again: let the waiting sender retry (once)."""
    if not future.done():
        future.set_result(None)
