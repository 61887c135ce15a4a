"""An in-process stand-in for ``clipboard.runner.Runner``, for the fast test tier.

The engine reaches workers through one seam: ``runner.run(step, clipboard, timeout=,
cancel=, text=, context=)`` returning a ``StepResult``, plus ``tasks`` (the catalog),
``resolve`` and ``prewarm``. This class offers the same seam with tasks that are
plain Python callables registered by name, so the engine's rules (rollback order,
caps, waits, cancel, retry) run against the real ``Engine`` and ``Store`` in
milliseconds, with no fork server and no process. It lives in tests/, not in
clipboard/: the product has no use for steps that are not processes.

A step is controlled through its ``Behaviour``: ``fail`` makes it fail with that
error, ``delay`` sleeps first (asyncio), ``gate`` holds it until the test sets the
event — how a test interleaves two deployments deterministically. ``started``
fires when a step begins, and ``calls`` keeps the order steps ran in.
"""
from __future__ import annotations

import asyncio
import copy
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from clipboard.errors import UnknownStep
from clipboard.runner import StepContext, StepResult
from clipboard.steps import WAIT_STEP, check_step_name

Task = Callable[[dict[str, Any]], "dict[str, Any] | None"]


@dataclass
class Behaviour:
    """How one registered step acts. ``fn`` gets a copy of the clipboard and returns
    the clipboard it prints (None: prints nothing, the clipboard passes on as is).
    ``printed_on_fail`` makes a failing step print its clipboard first (it did part of
    its work, so its own undo runs)."""

    fn: Task | None = None
    fail: str | None = None
    delay: float = 0.0
    gate: asyncio.Event | None = None
    printed_on_fail: bool = False
    stderr: str = ""
    started: asyncio.Event = field(default_factory=asyncio.Event)


class FakeRunner:
    """Runs registered Python callables in the event loop, under the runner's contract."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self.calls: list[str] = []
        self.contexts: list[StepContext] = []
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.peak: defaultdict[str, int] = defaultdict(int)
        self.total = 0
        self.peak_total = 0

    def task(self, name: str, fn: Task | None = None, *, undo: str | None = None,
             timeout: float | None = None, writes: Iterable[str] = (),
             needs: Iterable[dict[str, str]] = (), **behaviour: Any) -> Behaviour:
        """Register ``name`` (a ``module:task``) with the catalog fields the engine reads."""
        check_step_name(name)
        self.tasks[name] = {"undo": undo, "timeout": timeout, "doc": "",
                            "writes": list(writes), "needs": list(needs)}
        self.behaviours[name] = Behaviour(fn, **behaviour)
        return self.behaviours[name]

    def resolve(self, step: str) -> str | None:
        """None for a registered task or the built-in wait; UnknownStep otherwise."""
        module, _task = check_step_name(step)
        if (module == "wait" and step.startswith(WAIT_STEP)) or step in self.tasks:
            return None
        raise UnknownStep(f"unknown step {step!r}: no Python task and no executable "
                          f"{module!r} in the worker directories")

    def prewarm(self, steps: Iterable[str]) -> None:
        """Nothing to warm: there are no fork servers."""

    async def close(self) -> None:
        """Nothing to stop."""

    async def run(self, step: str, clipboard: dict[str, Any], *, timeout: float,
                  cancel: asyncio.Event | asyncio.Future[Any] | None = None,
                  text: str | None = None, context: StepContext | None = None) -> StepResult:
        """Run one step to the end; like the real runner, never raises for what it does.
        ``context`` (which step of which deployment) is kept in ``contexts``."""
        if context is not None:
            self.contexts.append(context)
        started = time.time()
        behaviour = self.behaviours.get(step)
        if behaviour is None:
            return StepResult(False, clipboard, error=f"unknown step {step!r}",
                              started=started, finished=started)
        self.calls.append(step)
        self._enter(step)
        try:
            outcome = await self._hold(behaviour, timeout, cancel)
        finally:
            self._leave(step)
        finished = time.time()
        if outcome != "done":
            error = (f"timed out after {timeout:g}s; its process group was killed"
                     if outcome == "timed out" else "cancelled; its process group was killed")
            return StepResult(False, clipboard, exit_status=-15, error=error,
                              timed_out=outcome == "timed out",
                              cancelled=outcome == "cancelled", started=started,
                              finished=finished, stderr=behaviour.stderr)
        printed = behaviour.fn(copy.deepcopy(clipboard)) if behaviour.fn else None
        if behaviour.fail is not None:
            shown = printed if behaviour.printed_on_fail else None
            if behaviour.printed_on_fail and shown is None:
                shown = copy.deepcopy(clipboard)
            return StepResult(False, shown if shown is not None else clipboard, exit_status=1,
                              error=f"{behaviour.fail} (exit status 1)", printed=shown,
                              stderr=behaviour.stderr, started=started, finished=finished)
        return StepResult(True, printed if printed is not None else clipboard, exit_status=0,
                          printed=printed, stderr=behaviour.stderr, started=started,
                          finished=finished)

    async def _hold(self, behaviour: Behaviour, timeout: float,
                    cancel: asyncio.Event | asyncio.Future[Any] | None) -> str:
        """``done``, ``cancelled`` or ``timed out``: the delay and gate, raced against both."""
        behaviour.started.set()

        async def work() -> None:
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            if behaviour.gate is not None:
                await behaviour.gate.wait()

        worker = asyncio.ensure_future(work())
        stop: asyncio.Future[Any] | None = None
        if isinstance(cancel, asyncio.Event):
            stop = asyncio.ensure_future(cancel.wait())
        elif cancel is not None:
            stop = cancel
        waiters: list[asyncio.Future[Any]] = [worker] + ([stop] if stop is not None else [])
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if isinstance(cancel, asyncio.Event) and stop is not None:
                stop.cancel()
        if worker.done():
            return "done"
        worker.cancel()
        return "cancelled" if stop is not None and stop.done() else "timed out"

    def _enter(self, step: str) -> None:
        self.in_flight[step] += 1
        self.total += 1
        self.peak[step] = max(self.peak[step], self.in_flight[step])
        self.peak_total = max(self.peak_total, self.total)

    def _leave(self, step: str) -> None:
        self.in_flight[step] -= 1
        self.total -= 1
