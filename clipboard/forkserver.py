"""The warm fork server: a single-threaded process that has imported a worker
module once and forks a child per step.

Why: a fresh interpreter costs 70–100 ms before any import, and libcloud or
paramiko cost far more; a fork of a warm process costs about a millisecond. The
bot itself must not fork (it is an asyncio process with threads), so this
server is a separate process, started by ``clipboard.forkclient.ForkServer``.

There is one server per worker module (and a bare one that spawns executables): the
cost of a fork grows with the forking process's memory, and a no-op step should
not pay for libcloud's pages. ``--catalog`` imports every module once, prints
what they offer as JSON and exits; the bot validates pipelines against that.

Protocol, over one ``AF_UNIX``/``SOCK_SEQPACKET`` socket (one JSON object per
datagram):

- server → bot, once: ``{"hello": {"tasks": {...}, "import_errors": {...}}}`` (its modules)
- bot → server: ``{"id": n, "step": "mod:task", "exec": null|"/path"}`` with three
  file descriptors attached (the child's stdin, stdout and stderr);
- server → bot: ``{"id": n, "pid": pid}`` or ``{"id": n, "error": "..."}``;
- server → bot, when a child ends: ``{"exit": pid, "status": s}`` (negative = killed
  by that signal, as ``subprocess`` reports it).

Each child is in a session of its own (``setsid``) so that the bot can kill the
step's whole process group. When the bot goes away (EOF on the socket) the server kills every
child's group and exits, so a killed bot leaves no workers behind.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import select
import signal
import socket
import sys
from typing import Any

from clipboard import config as config_mod
from clipboard import worker

log = logging.getLogger(__name__)

MAX_MESSAGE = 65536


class Server:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: set[int] = set()
        self.max_bytes = config_mod.current().limits.max_bytes
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode())

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        try:
            self.send({"hello": worker.catalog()})  # a bot gone before this is EOF too
            while True:
                for fd, _ in poller.poll():
                    if fd == self.wake_r:
                        self._drain_wakeup()
                        self._reap()
                    elif not self._handle_request():
                        return
        except (BrokenPipeError, ConnectionResetError):
            return  # the bot went away while we reported to it: same as EOF
        finally:
            self._kill_children()

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.sock.sendall(b'{"exit": %d, "status": %d}' % (pid, os.waitstatus_to_exitcode(status)))

    def _handle_request(self) -> bool:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 3)
        except InterruptedError:
            return True
        except ConnectionResetError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        request = json.loads(data)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self.send({"id": request.get("id"), "error": "request without its three descriptors"})
            return True
        path = request.get("exec")
        try:
            pid = _spawn(path, request["step"], fds) if path else os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            what = f"cannot execute {path}" if path else "fork failed"
            self.send({"id": request["id"], "error": f"{what}: {exc.strerror}"})
            return True
        if pid == 0:
            self._child(request, fds)
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        self.sock.sendall(b'{"id": %d, "pid": %d}' % (request["id"], pid))
        return True

    def _child(self, request: dict[str, Any], fds: list[int]) -> None:
        """Become the step: own session, pipes on 0/1/2, then the task."""
        status = worker.EXIT_FAILED
        try:
            gc.disable()  # a step is short-lived; collecting would only copy shared pages
            os.setsid()
            signal.set_wakeup_fd(-1)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            self.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            status = worker.run_task(request["step"], sys.stdin.buffer, sys.stdout,
                                     sys.stderr, self.max_bytes)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001 - the child never returns into the server loop
            try:
                os.write(2, f"worker crashed before its task ran: {exc!r}\n".encode())
            except OSError:
                pass
        finally:
            os._exit(status)

    def _kill_children(self) -> None:
        for pid in self.children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def _spawn(path: str, step: str, fds: list[int]) -> int:
    """Start an executable's step with ``posix_spawn`` (a vfork and an exec), not a fork:
    copying this server's page tables, and the child's Python before its exec, cost
    about 2.5 ms of CPU a step where a spawn costs 0.7 ms. The child is what a forked
    one would be: its own session, the pipes on 0/1/2, SIGINT and SIGPIPE back to
    their defaults (this server and Python ignore them, and an ignored signal stays
    ignored across an exec; a Python task keeps them: the runner only ever sends
    SIGTERM and SIGKILL)."""
    actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_DUP2, fd, target)
                                      for target, fd in enumerate(fds)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in fds]
    return os.posix_spawn(path, [path, step.partition(":")[2]], os.environ,
                          file_actions=actions, setsid=True,
                          setsigdef=(signal.SIGINT, signal.SIGPIPE))


def main() -> None:
    # Configured once for the children, whose stderr (fd 2) becomes the step's log;
    # the server itself only logs warnings, which reach jarvis's own stderr.
    worker.configure_logging()
    if sys.argv[1] == "--catalog":
        worker.import_all()
        print(json.dumps(worker.catalog()))
        return
    sock = socket.socket(fileno=int(sys.argv[1]))
    for module in sys.argv[2:]:
        worker.import_module(module)
    # Children share the imported modules' pages copy-on-write; a garbage collection
    # walking them in every child would copy the whole heap, so freeze it here.
    gc.collect()
    gc.freeze()
    Server(sock).serve()


if __name__ == "__main__":
    main()
