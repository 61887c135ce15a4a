"""Run one step as its own process under the clipboard contract.

The event loop only ever waits on pipes: the clipboard goes to the worker's
stdin, its stdout is collected up to the size limit, its stderr is kept as the
step's log, and the exit status comes back from the fork server. On timeout or
cancel the worker's whole process group is killed (SIGTERM, then SIGKILL after
the grace period); after every step the group is killed anyway, because a
worker's stray children belong to the step, not to jarvis — a daemon a worker
means to leave running (a local node's sshd) starts its own session.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from clipboard import document
from clipboard.config import Config
from clipboard.errors import ClipboardError, JarvisError

log = logging.getLogger(__name__)

STEP_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
EOF_GRACE = 2.0
BUILTIN_WAIT = "wait:host"  # run by the engine itself, never as a process
MAX_STDERR_KEPT = 256 * 1024


class UnknownStep(JarvisError):
    """A pipeline names a step no worker provides."""


def check_step_name(step: str) -> tuple[str, str]:
    """``(module, task)`` of a step name; the built-in ``wait:host ...`` is checked whole."""
    if step.split(None, 1)[:1] == [BUILTIN_WAIT]:
        from clipboard.pipeline import parse_wait  # pipeline imports this module
        try:
            parse_wait(step)
        except JarvisError as exc:
            raise UnknownStep(str(exc)) from None
        return "wait", "host"
    module, sep, task = step.partition(":")
    if not sep or not module or not task or not set(module) <= STEP_NAME_CHARS \
            or not set(task) <= STEP_NAME_CHARS:
        raise UnknownStep(f"{step!r} is not a step name of the form module:task")
    return module, task


@dataclass
class StepResult:
    """What one step did. ``clipboard`` is the clipboard for the next step."""

    ok: bool
    clipboard: dict[str, Any]
    exit_status: int | None = None
    error: str | None = None
    printed: dict[str, Any] | None = None
    text: str | None = None  # the YAML the worker printed, when it printed a mapping
    stderr: str = ""
    timed_out: bool = False
    cancelled: bool = False
    started: float = 0.0
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def stderr_tail(self, lines: int) -> list[str]:
        return self.stderr.splitlines()[-lines:]


@dataclass
class _Child:
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
        self._replies: dict[int, asyncio.Future[_Child]] = {}
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
        self._proc = subprocess.Popen(
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
        except asyncio.TimeoutError:
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
                reply.set_result(_Child(message["pid"], exited))
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
        for future in [*self._replies.values(), *self._exits.values()]:
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

    async def spawn(self, step: str, executable: str | None, fds: tuple[int, int, int]) -> _Child:
        await self.ensure_started()
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        self._next_id += 1
        request_id = self._next_id
        reply: asyncio.Future[_Child] = loop.create_future()
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
                    writable = loop.create_future()
                    loop.add_writer(sock.fileno(),
                                    lambda: writable.done() or writable.set_result(None))
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
            except asyncio.TimeoutError:
                self._proc.kill()
            self._proc = None


class Runner:
    """Runs steps: Python tasks through the fork server, executables from worker dirs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog: dict[str, Any] = {"tasks": {}, "import_errors": {}}
        self.servers: dict[str, ForkServer] = {}
        self._warming: dict[str, asyncio.Task[None]] = {}
        self.max_bytes = int(config.get("clipboard.max_bytes"))
        self.max_nodes = int(config.get("clipboard.max_nodes"))
        self.kill_grace = float(config.get("runner.kill_grace"))
        self.worker_dirs = [Path(d).expanduser() for d in config.get("runner.worker_dirs") or []]

    async def start(self) -> None:
        """Learn every task the worker modules offer (their servers start on first use)."""
        env = dict(os.environ)
        if self.config.path is not None:
            env["JARVIS_CONFIG"] = str(self.config.path)
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "clipboard.forkserver", "--catalog"],
            capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            raise JarvisError(f"cannot list the worker modules: {done.stderr.strip()[-500:]}")
        self.catalog = json.loads(done.stdout)
        for module, error in self.catalog["import_errors"].items():
            log.warning("worker module %s is unavailable: %s", module, error)

    async def close(self) -> None:
        for warming in list(self._warming.values()):
            warming.cancel()
        servers, self.servers = list(self.servers.values()), {}
        await asyncio.gather(*(server.close() for server in servers))

    def server(self, module: str | None) -> ForkServer:
        """The warm server for a Python module's steps, or the bare one for executables."""
        key = module or ""
        if key not in self.servers:
            self.servers[key] = ForkServer(self.config, [module] if module else [])
        return self.servers[key]

    def prewarm(self, steps: Iterable[str]) -> None:
        """Start, in the background and all at once, the fork servers these steps will
        need, so a pipeline's first steps do not each wait for their module's imports."""
        for module in {step.partition(":")[0] for step in steps if step in self.tasks}:
            server = self.server(module)
            if server.started or module in self._warming:
                continue
            warming = asyncio.create_task(server.ensure_started(), name=f"prewarm-{module}")
            self._warming[module] = warming
            warming.add_done_callback(lambda done, m=module: self._warmed(m, done))

    def _warmed(self, module: str, done: "asyncio.Task[None]") -> None:
        self._warming.pop(module, None)
        if not done.cancelled() and done.exception() is not None:
            log.warning("the fork server of %s did not start: %s (its steps will say why)",
                        module, done.exception())

    @property
    def tasks(self) -> dict[str, Any]:
        return self.catalog["tasks"]

    @property
    def import_errors(self) -> dict[str, str]:
        return self.catalog["import_errors"]

    def executable_for(self, module: str) -> Path | None:
        for directory in self.worker_dirs:
            candidate = directory / module
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        return None

    def resolve(self, step: str) -> str | None:
        """The executable for ``step``, None for a Python task; UnknownStep if neither."""
        module, _task = check_step_name(step)
        if module == "wait" and step.startswith(BUILTIN_WAIT):
            return None
        if step in self.tasks:
            return None
        executable = self.executable_for(module)
        if executable is not None:
            return str(executable)
        if module in self.import_errors:
            raise UnknownStep(f"{step}: worker module {module!r} cannot be imported: "
                              f"{self.import_errors[module]}")
        raise UnknownStep(f"unknown step {step!r}: no Python task and no executable "
                          f"{module!r} in the worker directories")

    def executables(self) -> list[Path]:
        found: dict[str, Path] = {}
        for directory in self.worker_dirs:
            if directory.is_dir():
                for path in sorted(directory.iterdir()):
                    if path.is_file() and os.access(path, os.X_OK):
                        found.setdefault(path.name, path)
        return list(found.values())

    async def run(self, step: str, clipboard: dict[str, Any], *, timeout: float,
                  cancel: asyncio.Event | asyncio.Future[Any] | None = None,
                  text: str | None = None) -> StepResult:
        """Run one step to the end; never raises for anything the worker does.

        ``cancel`` (an event, or a future that completes) kills the step. ``text``
        is the clipboard's YAML when the caller has it (what the previous worker
        printed), so it need not be dumped again. A Python worker is handed JSON
        instead when JSON says the clipboard exactly (``document.dump_json``);
        an executable always gets the YAML.
        """
        started = time.time()
        try:
            executable = self.resolve(step)
        except UnknownStep as exc:
            return StepResult(False, clipboard, error=str(exc), started=started, finished=started)
        if step.startswith(BUILTIN_WAIT):
            return StepResult(False, clipboard, error=f"{step}: built in, run by the engine",
                              started=started, finished=started)
        text = document.dump(clipboard) if text is None else text
        handed = text if executable else document.dump_json(clipboard) or text
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        ours = (stdin_w, stdout_r, stderr_r)
        try:
            server = self.server(None if executable else step.partition(":")[0])
            child = await server.spawn(step, executable, (stdin_r, stdout_w, stderr_w))
        except JarvisError as exc:
            for fd in ours:
                os.close(fd)
            return StepResult(False, clipboard, error=str(exc), started=started, finished=time.time())
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)
        return await self._supervise(step, child, ours, text, handed, clipboard, timeout, cancel,
                                     started)

    async def _supervise(self, step: str, child: _Child, fds: tuple[int, int, int], text: str,
                         handed: str, clipboard: dict[str, Any], timeout: float,
                         cancel: asyncio.Event | asyncio.Future[Any] | None,
                         started: float) -> StepResult:
        stdin_w, stdout_r, stderr_r = fds
        out = _PipeReader(stdout_r, self.max_bytes)
        err = _PipeReader(stderr_r, MAX_STDERR_KEPT, keep_tail=True)
        given = text.encode()
        writer = _PipeWriter(stdin_w, given if handed is text else handed.encode())
        timed_out = cancelled = oversize = False
        waiters = [child.exited, out.overflowed]
        owned = isinstance(cancel, asyncio.Event)  # a waiting task of ours, to be cancelled
        cancel_wait = asyncio.ensure_future(cancel.wait()) if isinstance(cancel, asyncio.Event) \
            else cancel
        if cancel_wait is not None:
            waiters.append(cancel_wait)
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not child.exited.done():
                if out.overflowed.done():
                    oversize = True
                elif cancel_wait is not None and cancel_wait.done():
                    cancelled = True
                else:
                    timed_out = True
                await self._terminate(child)
            else:
                oversize = out.overflowed.done()
        finally:
            if owned and cancel_wait is not None:
                cancel_wait.cancel()
            _killpg(child.pid, signal.SIGKILL)
            writer.close()
        status = await _result_of(child.exited)
        await out.finished(EOF_GRACE)
        await err.finished(EOF_GRACE)
        finished = time.time()
        stderr = err.text()
        result = StepResult(False, clipboard, exit_status=status, stderr=stderr,
                            timed_out=timed_out, cancelled=cancelled, started=started,
                            finished=finished)
        if timed_out:
            result.error = f"timed out after {timeout:g}s; its process group was killed"
            return result
        if cancelled:
            result.error = "cancelled; its process group was killed"
            return result
        if oversize:
            result.error = f"printed more than the limit of {self.max_bytes} bytes on stdout"
            return result
        data = out.data()
        if data == given:  # printed back unchanged (an echo): the mapping it came as
            printed, parse_error = clipboard, None
        else:
            printed, parse_error = self._parse(data)
        result.printed = printed
        if printed is not None:
            result.text = text if printed is clipboard else data.decode("utf-8", errors="replace")
        if status == 0 and parse_error is None:
            result.ok = True
            result.clipboard = printed if printed is not None else clipboard
            return result
        if printed is not None:
            result.clipboard = printed
        if status != 0:
            result.error = _describe_failure(status, stderr)
        else:
            result.error = parse_error
        return result

    def _parse(self, data: bytes) -> tuple[dict[str, Any] | None, str | None]:
        if not data.strip():
            return None, None
        try:
            return document.load(data, max_bytes=self.max_bytes, max_nodes=self.max_nodes,
                                 what="the worker's output"), None
        except ClipboardError as exc:
            return None, str(exc)

    async def _terminate(self, child: _Child) -> None:
        _killpg(child.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(child.exited), self.kill_grace)
        except (asyncio.TimeoutError, JarvisError):
            pass


async def _result_of(exited: asyncio.Future[int]) -> int | None:
    try:
        return await exited
    except JarvisError:
        return None


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:  # pragma: no cover - a recycled pgid of another user
        log.warning("cannot signal process group %d: %s", pgid, exc)


def _describe_failure(status: int | None, stderr: str) -> str:
    if status is None:
        how = "lost (the fork server died)"
    elif status < 0:
        try:
            how = f"killed by signal {signal.Signals(-status).name}"
        except ValueError:
            how = f"killed by signal {-status}"
    else:
        how = f"exit status {status}"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    return f"{last} ({how})" if last else how


class _PipeReader:
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
        except asyncio.TimeoutError:
            log.warning("a step's pipe stayed open after the step ended; closed")
            self._close()

    def data(self) -> bytes:
        return b"".join(self.chunks)

    def text(self) -> str:
        return self.data().decode("utf-8", errors="replace")


class _PipeWriter:
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
