"""``jarvis worker``: a Celery worker whose one task runs a step through the local
``Runner`` — the same fork servers, executables and contract as a bot running steps
itself, so a step's answer is the same wherever it ran. It never opens the store.

The worker's pool is threads: each task thread hands its step to one event loop in a
thread of its own that owns one ``Runner`` (one set of warm fork servers for the whole
worker, not one per pool process), and blocks until the step ended. A cancel arrives
as the ``jarvis_cancel`` control command (the bot also revokes the task, so a step not
yet begun never starts): it completes the step's cancel future, and the runner kills
the step's process group as it does locally. The step's own timeout is enforced here
by the runner; the bot enforces it again, from the moment the step started.

A worker that dies mid-step leaves its message unacknowledged; it is delivered again
(see ``clipboard.celery_app``). As a worker begins a step it records its own name
under the task id (``RAN_PREFIX``): finding another name there means an earlier
delivery began this step and was lost, so the step runs again (it is ensure-style)
or, with ``retry_lost: false`` in the message, fails naming the lost worker. A step
delivered again that had already answered (its worker could not acknowledge it: the
broker restarted under it) answers the same again and does not run.

The worker, not Celery (``track_started`` is off), stores the STARTED state with
its name, in the same atomic round trip as those checks
(``clipboard.celery_backend``), so an earlier answer is never overwritten by it.
A broker restart does not hand the steps in flight to a second worker while the
first still runs them (``clipboard.celery_transport``).

Celery logs a task's return value at INFO: that is a clipboard, secrets and all, so
its trace logger is kept at WARNING, and the bot sends the task's arguments with a
placeholder repr. As in the bot, every log line is scrubbed of URL credentials and
the configuration's secrets.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from celery.worker.control import control_command, ok

from clipboard import celery_app, document, redact
from clipboard.config import Config
from clipboard.errors import ClipboardError
from clipboard.runner import Runner, StepResult

log = logging.getLogger(__name__)
T = TypeVar("T")
CANCELLED_KEPT = 1000  # cancels remembered for steps that had not begun yet


class StepHost:
    """One event loop in a thread with one local ``Runner``; task threads call ``run``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="jarvis-steps",
                                       daemon=True)
        self.runner = Runner(config)
        self.cancels: dict[str, asyncio.Future[None]] = {}
        self.cancelled: list[str] = []

    def start(self) -> None:
        self.thread.start()
        self._call(self.runner.start())

    def close(self) -> None:
        try:
            self._call(self.runner.close(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def _call(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self.loop)
        return future.result(timeout)

    def run(self, task_id: str, payload: dict[str, Any]) -> StepResult:
        return self._call(self._run(task_id, payload))

    def cancel(self, task_id: str) -> None:
        self.loop.call_soon_threadsafe(self._cancel, task_id)

    def _cancel(self, task_id: str) -> None:
        cancel = self.cancels.get(task_id)
        if cancel is None:
            self.cancelled = [*self.cancelled[-CANCELLED_KEPT:], task_id]
        elif not cancel.done():
            cancel.set_result(None)

    async def _run(self, task_id: str, payload: dict[str, Any]) -> StepResult:
        step, text = str(payload["step"]), str(payload["text"])
        started = time.time()
        if task_id in self.cancelled:
            return StepResult(False, {}, cancelled=True, error="cancelled before it began",
                              started=started, finished=started)
        try:
            clipboard = document.load_handed(text, max_bytes=self.runner.max_bytes,
                                             max_nodes=self.runner.max_nodes,
                                             what="the clipboard")
        except ClipboardError as exc:
            return StepResult(False, {}, error=str(exc), started=started, finished=started)
        cancel: asyncio.Future[None] = self.loop.create_future()
        self.cancels[task_id] = cancel
        try:
            return await self.runner.run(step, clipboard, timeout=float(payload["timeout"]),
                                         cancel=cancel, text=text)
        finally:
            del self.cancels[task_id]


_HOST: StepHost | None = None


def _cancel_command(state: Any, task_id: str) -> Any:
    """The ``jarvis_cancel`` control command: kill this step if it runs here."""
    if _HOST is not None:
        _HOST.cancel(task_id)
    return ok("cancelling")


control_command(args=[("task_id", str)], signature="<task_id>",
                name=celery_app.CANCEL)(_cancel_command)


def answer(result: StepResult, worker: str) -> dict[str, Any]:
    """A step's result as the task returns it (JSON): the printed mapping as its text."""
    return {"ok": result.ok, "exit_status": result.exit_status, "error": result.error,
            "stderr": result.stderr, "timed_out": result.timed_out,
            "cancelled": result.cancelled, "started": result.started,
            "finished": result.finished,
            "text": result.text if result.printed is not None else None, "worker": worker}


def run_task(task: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """The body of ``jarvis.step`` on this worker."""
    request = task.request
    worker = str(request.hostname)
    begun: tuple[dict[str, Any] | None, str | None] = task.app.backend.begin(
        str(request.id), worker, {"hostname": worker, "pid": os.getpid()}, request)
    before, lost = begun
    if before is not None:
        log.warning("%s (task %s) was delivered again after it answered: answering the "
                    "same, not running it again", payload["step"], request.id)
        return before
    if lost is not None:
        if not payload.get("retry_lost", True):
            now = time.time()
            error = (f"its worker {lost} was lost mid-step (killed, or its host went down); "
                     f"runner.celery.retry_lost is false, so it was not run again")
            log.warning("%s (task %s): %s", payload["step"], request.id, error)
            return answer(StepResult(False, {}, error=error, started=now, finished=now),
                          worker)
        log.warning("%s (task %s): its worker %s was lost mid-step; running it again here",
                    payload["step"], request.id, lost)
    assert _HOST is not None
    return answer(_HOST.run(str(request.id), payload), worker)


def serve(config: Config, *, queues: Sequence[str], concurrency: int, hostname: str | None,
          loglevel: str) -> int:
    """Run a worker until it is told to stop (SIGTERM, SIGINT): the steps of ``queues``,
    ``concurrency`` at once."""
    global _HOST
    app = celery_app.build(config)
    app.task(name=celery_app.TASK, bind=True, acks_late=True,
             reject_on_worker_lost=True)(run_task)
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    unguard = redact.guard_logging(redact.Scrubber(config.secrets))  # as the bot's logs are
    _HOST = StepHost(config)
    _HOST.start()
    argv = ["worker", "--pool", "threads", "--concurrency", str(concurrency),
            "--queues", ",".join(queues) or celery_app.default_queue(config),
            "--loglevel", loglevel, "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--optimization", "fair"]
    if hostname:
        argv += ["--hostname", hostname]
    try:
        app.worker_main(argv)
    finally:
        host, _HOST = _HOST, None
        host.close()
        unguard()
    return 0
