"""Run one step as its own process under the clipboard contract.

This module resolves a step name to what runs it (a Python task some worker
module offers, or an executable in a worker directory) and supervises the run;
the fork server's protocol is ``clipboard.forkclient``'s, the pipes are
``clipboard.pipes``', and the step-name syntax is ``clipboard.steps``'s.

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
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipboard import document
from clipboard.config import Config
from clipboard.errors import ClipboardError, JarvisError, UnknownStep
from clipboard.forkclient import Child, ForkServer
from clipboard.pipes import PipeReader, PipeWriter
from clipboard.records import StepKind
from clipboard.steps import WAIT_STEP, check_step_name

log = logging.getLogger(__name__)

EOF_GRACE = 2.0
MAX_STDERR_KEPT = 256 * 1024


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
    worker: str | None = None  # the Celery worker that ran it (None: this process)

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def stderr_tail(self, lines: int) -> list[str]:
        return self.stderr.splitlines()[-lines:]


@dataclass(frozen=True)
class StepContext:
    """Which step of which deployment a run is: what a remote backend names its task
    by (the same for the same step of the same attempt, so a bot restarted mid-step
    finds it again) and routes on (the host's labels). The local runner needs none.
    The deployment's creation time is part of the name: two stores (a store made
    afresh, a second bot) both have a deployment #1, and must not share its steps."""

    deployment_id: int
    index: int
    attempt: int = 1
    step_id: int | None = None
    kind: StepKind = StepKind.STEP
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    # told the remote worker's name as it takes the step (what status shows meanwhile)
    on_started: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return (f"d{self.deployment_id}.{round(self.created_at * 1000):x}-{self.kind}"
                f"{self.index}-a{self.attempt}")


class Runner:
    """Runs steps: Python tasks through the fork server, executables from worker dirs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog: dict[str, Any] = {"tasks": {}, "import_errors": {}}
        self.servers: dict[str, ForkServer] = {}
        self._warming: dict[str, asyncio.Task[None]] = {}
        self.max_bytes = config.limits.max_bytes
        self.max_nodes = config.limits.max_nodes
        self.kill_grace = config.runner.kill_grace
        self.worker_dirs = [Path(d).expanduser() for d in config.runner.worker_dirs]

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
            warming.add_done_callback(functools.partial(self._warmed, module))

    def _warmed(self, module: str, done: asyncio.Task[None]) -> None:
        self._warming.pop(module, None)
        if not done.cancelled() and done.exception() is not None:
            log.warning("the fork server of %s did not start: %s (its steps will say why)",
                        module, done.exception())

    @property
    def tasks(self) -> dict[str, Any]:
        tasks: dict[str, Any] = self.catalog["tasks"]
        return tasks

    @property
    def import_errors(self) -> dict[str, str]:
        errors: dict[str, str] = self.catalog["import_errors"]
        return errors

    def executable_for(self, module: str) -> Path | None:
        for directory in self.worker_dirs:
            candidate = directory / module
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        return None

    def resolve(self, step: str) -> str | None:
        """The executable for ``step``, None for a Python task; UnknownStep if neither."""
        module, _task = check_step_name(step)
        if module == "wait" and step.startswith(WAIT_STEP):
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
                  text: str | None = None, context: StepContext | None = None) -> StepResult:
        """Run one step to the end; never raises for anything the worker does.

        ``cancel`` (an event, or a future that completes) kills the step. ``text``
        is the clipboard's YAML when the caller has it (what the previous worker
        printed), so it need not be dumped again. A Python worker is handed JSON
        instead when JSON says the clipboard exactly (``document.dump_json``);
        an executable always gets the YAML. ``context`` is for remote backends.
        """
        started = time.time()
        try:
            executable = self.resolve(step)
        except UnknownStep as exc:
            return StepResult(False, clipboard, error=str(exc), started=started, finished=started)
        if step.startswith(WAIT_STEP):
            return StepResult(False, clipboard, error=f"{step}: built in, run by the engine",
                              started=started, finished=started)
        text = document.dump(clipboard) if text is None else text
        handed = document.handed(clipboard, text, executable=executable is not None)
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

    async def _supervise(self, step: str, child: Child, fds: tuple[int, int, int], text: str,
                         handed: str, clipboard: dict[str, Any], timeout: float,
                         cancel: asyncio.Event | asyncio.Future[Any] | None,
                         started: float) -> StepResult:
        stdin_w, stdout_r, stderr_r = fds
        out = PipeReader(stdout_r, self.max_bytes)
        err = PipeReader(stderr_r, MAX_STDERR_KEPT, keep_tail=True)
        given = text.encode()
        writer = PipeWriter(stdin_w, given if handed is text else handed.encode())
        timed_out = cancelled = oversize = False
        waiters: list[asyncio.Future[Any]] = [child.exited, out.overflowed]
        owned = isinstance(cancel, asyncio.Event)  # a waiting task of ours, to be cancelled
        cancel_wait: asyncio.Future[Any] | None = asyncio.ensure_future(cancel.wait()) \
            if isinstance(cancel, asyncio.Event) else cancel
        if cancel_wait is not None:
            waiters.append(cancel_wait)
        try:
            await asyncio.wait(waiters, timeout=timeout,
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
        printed: dict[str, Any] | None
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

    async def _terminate(self, child: Child) -> None:
        _killpg(child.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(child.exited), self.kill_grace)
        except (TimeoutError, JarvisError):
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

