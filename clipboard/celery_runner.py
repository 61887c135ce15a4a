"""``runner.backend: celery``: the bot's runner that hands each step to a Celery worker.

It is a ``Runner`` for everything but running: the catalog, ``resolve`` and the
timeouts and undos the engine reads are learnt on the bot's host as locally (the
workers run the same project), and an unknown step fails here before anything is
sent. ``run`` sends one ``jarvis.step`` task — the step name, the clipboard's text,
its timeout, the deployment and step ids — to the queue ``celery_app.queue_for``
routes it to, and waits on its states (``celery_results.Results``): nothing blocks
the loop but the short publish, which runs in a thread. The clipboard goes as a
Python task's child would be handed it locally: JSON when JSON says it exactly, so
the worker parses it at JSON's speed rather than YAML's; YAML for an executable.

The task id is the step's identity (``StepContext.key``): the same step of the same
attempt of a deployment always has the same id, so a bot restarted mid-step waits
for the answer of the task it sent before instead of sending it again
(``celery_marks``).

Cancel revokes the task (one not begun never starts) and sends ``jarvis_cancel``,
on which the worker running it kills the step's process group. The engine's timeout
holds too: counted from the moment a worker took the step (queued time is not the
step's), plus ``kill_grace`` and ``answer_grace`` for the worker's own answer.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from clipboard import celery_app, document
from clipboard.celery_marks import SentMarks
from clipboard.celery_results import Results
from clipboard.config import Config
from clipboard.errors import ClipboardError, ConfigError, JarvisError, UnknownStep
from clipboard.runner import Runner, StepContext, StepResult
from clipboard.steps import WAIT_STEP

log = logging.getLogger(__name__)

ID_PREFIX = "jarvis-"
SENDING_ERRORS = (KombuError, RedisError, OSError, TimeoutError)
Cancel = asyncio.Event | asyncio.Future[Any] | None


class CeleryRunner(Runner):
    """A ``Runner`` whose steps run on Celery workers."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        wrong = celery_app.problems(config)
        if wrong:
            raise ConfigError("; ".join(wrong))
        self.visibility = config.runner.celery.visibility_timeout
        self.app = celery_app.build(config)
        self.queues = config.runner.celery.queues
        self.default_queue = celery_app.default_queue(config)
        self.retry_lost = config.runner.celery.retry_lost
        self.grace = self.kill_grace + config.runner.celery.answer_grace
        _broker, results = celery_app.urls(config)
        self.results = Results(results, ID_PREFIX)
        self.marks = SentMarks(results, config.runner.celery.result_expires)

    async def start(self) -> None:
        await super().start()
        await self.results.start()

    async def close(self) -> None:
        await self.results.close()
        await super().close()
        await asyncio.to_thread(self.app.close)
        await asyncio.to_thread(self.marks.close)

    def prewarm(self, steps: Iterable[str]) -> None:
        """Nothing to warm here: each worker keeps its own fork servers warm."""

    def queue_for(self, step: str, labels: dict[str, str]) -> str:
        return celery_app.queue_for(step, labels, self.queues, self.default_queue)

    async def run(self, step: str, clipboard: dict[str, Any], *, timeout: float,
                  cancel: Cancel = None, text: str | None = None,
                  context: StepContext | None = None) -> StepResult:
        """Run one step on a worker; never raises for anything the worker or broker does."""
        started = time.time()
        try:
            executable = self.resolve(step)
        except UnknownStep as exc:
            return StepResult(False, clipboard, error=str(exc), started=started, finished=started)
        if step.startswith(WAIT_STEP):
            return StepResult(False, clipboard, error=f"{step}: built in, run by the engine",
                              started=started, finished=started)
        if timeout >= self.visibility:
            log.warning("%s has a timeout of %gs, not less than runner.celery."
                        "visibility_timeout (%gs): if it runs that long a second worker "
                        "will be handed it too", step, timeout, self.visibility)
        text = document.dump(clipboard) if text is None else text
        sent = document.handed(clipboard, text, executable=executable is not None)
        key = context.key if context is not None else f"once-{uuid.uuid4().hex}"
        task_id = ID_PREFIX + key
        queue = self.queue_for(step, context.labels if context is not None else {})
        payload = {"step": step, "text": sent, "timeout": timeout,
                   "deployment_id": context.deployment_id if context else None,
                   "step_id": context.step_id if context else None,
                   "index": context.index if context else None,
                   "retry_lost": self.retry_lost}
        states = self.results.watch(task_id)
        try:
            if await asyncio.to_thread(self._hand_over, task_id, queue, payload):
                if not self.results.connected.is_set():  # else its states come subscribed
                    await self.results.fetch(task_id)
            else:
                log.info("%s (task %s) was sent before this bot started: waiting for its "
                         "answer", step, task_id)
                await self.results.fetch(task_id)
            answer = await self._wait(task_id, states, timeout, cancel, context)
        except SENDING_ERRORS as exc:  # the broker or backend refused: it did not run here
            log.warning("%s (task %s): %s", step, task_id, exc)
            return StepResult(False, clipboard, error=f"could not hand the step to a Celery "
                              f"worker: {type(exc).__name__}: {exc}", started=started,
                              finished=time.time())
        finally:
            self.results.unwatch(task_id)
        return self._result(answer, clipboard, text, started)

    def _hand_over(self, task_id: str, queue: str, payload: dict[str, Any]) -> bool:
        """Claim, publish and mark the task (in a thread: all three block); False when
        an earlier bot handed it over already."""
        if not self.marks.claim(task_id):
            return False
        try:
            self.app.send_task(celery_app.TASK, args=[payload], task_id=task_id, queue=queue,
                               argsrepr=f"[{payload['step']!r}]", kwargsrepr="{}")
        except BaseException:
            with contextlib.suppress(*SENDING_ERRORS):
                self.marks.drop(task_id)
            raise
        try:
            self.marks.sent(task_id)
        except SENDING_ERRORS as exc:  # a bot restarted without it sends it again: no loss
            log.warning("task %s: could not mark it sent: %s", task_id, exc)
        return True

    async def _wait(self, task_id: str, states: asyncio.Queue[dict[str, Any]], timeout: float,
                    cancel: Cancel, context: StepContext | None) -> dict[str, Any]:
        """The task's answer: its result, or what the bot says when it stops waiting."""
        loop = asyncio.get_running_loop()
        cancel_wait: asyncio.Future[Any] | None = asyncio.ensure_future(cancel.wait()) \
            if isinstance(cancel, asyncio.Event) else cancel
        deadline: float | None = None
        worker: str | None = None
        cancelled = False  # the bot cancelled it and waits for the worker's answer
        try:
            while True:
                left = None if deadline is None else max(deadline - loop.time(), 0)
                getting = asyncio.ensure_future(states.get())
                waiters: set[asyncio.Future[Any]] = {getting}
                if cancel_wait is not None and not cancelled:
                    waiters.add(cancel_wait)
                done, _ = await asyncio.wait(waiters, timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                else:
                    meta = getting.result()
                    status = meta.get("status")
                    if status == "STARTED" and not cancelled:
                        worker = (meta.get("result") or {}).get("hostname") or worker
                        deadline = loop.time() + timeout + self.grace
                        await _tell_started(context, worker, task_id)
                    elif status == "SUCCESS" and isinstance(meta.get("result"), dict):
                        answer: dict[str, Any] = meta["result"]
                        answer["cancelled"] = bool(answer.get("cancelled")) or cancelled
                        return answer
                    elif status in ("FAILURE", "REVOKED"):
                        return _failure(meta, worker, cancelled)
                    continue
                if not cancelled and cancel_wait is not None and cancel_wait.done():
                    cancelled = True
                    await self._cancel(task_id)
                    deadline = loop.time() + self.grace
                    continue
                # the deadline passed: no answer in time
                if not cancelled:
                    await self._cancel(task_id)
                    return {"timed_out": True, "worker": worker,
                            "error": f"timed out after {timeout:g}s with no answer from "
                                     f"worker {worker}; the step was cancelled there"}
                return {"cancelled": True, "worker": worker,
                        "error": f"cancelled; worker {worker} did not answer within "
                                 f"{self.grace:g}s"}
        finally:
            if isinstance(cancel, asyncio.Event) and cancel_wait is not None:
                cancel_wait.cancel()

    async def _cancel(self, task_id: str) -> None:
        def cancel() -> None:
            self.app.control.revoke(task_id)
            self.app.control.broadcast(celery_app.CANCEL, arguments={"task_id": task_id})
        try:
            await asyncio.to_thread(cancel)
        except SENDING_ERRORS as exc:
            log.warning("could not cancel task %s: %s", task_id, exc)

    def _result(self, answer: dict[str, Any], clipboard: dict[str, Any], text: str,
                started: float) -> StepResult:
        """The worker's answer as the local runner would have returned it."""
        result = StepResult(
            bool(answer.get("ok")), clipboard, exit_status=answer.get("exit_status"),
            error=answer.get("error"), stderr=answer.get("stderr") or "",
            timed_out=bool(answer.get("timed_out")), cancelled=bool(answer.get("cancelled")),
            started=float(answer.get("started") or started),
            finished=float(answer.get("finished") or time.time()), worker=answer.get("worker"))
        printed = answer.get("text")
        if result.cancelled or result.timed_out:
            result.ok = False
            result.error = result.error or ("cancelled; its process group was killed"
                                            if result.cancelled else "timed out")
        if printed is None:
            return result
        if printed == text:
            result.printed, result.text = clipboard, text
        else:
            try:
                result.printed = document.load(printed, max_bytes=self.max_bytes,
                                               max_nodes=self.max_nodes,
                                               what="the worker's output")
                result.text = printed
            except ClipboardError as exc:
                result.ok, result.error = False, str(exc)
                return result
        result.clipboard = result.printed
        return result


async def _tell_started(context: StepContext | None, worker: str | None, task_id: str) -> None:
    if context is None or context.on_started is None or worker is None:
        return
    try:
        await context.on_started(worker)
    except JarvisError as exc:  # the store's trouble: the step's end will say it again
        log.warning("task %s: could not record its worker %s: %s", task_id, worker, exc)


def _failure(meta: dict[str, Any], worker: str | None, cancelled: bool) -> dict[str, Any]:
    """A task that raised (a bug or a worker without jarvis's task) or was revoked."""
    if meta.get("status") == "REVOKED":
        return {"cancelled": True, "worker": worker,
                "error": "cancelled; its task was revoked"}
    result = meta.get("result") or {}
    message = result.get("exc_message") if isinstance(result, dict) else result
    if isinstance(message, list):
        message = " ".join(str(m) for m in message)
    kind = result.get("exc_type", "error") if isinstance(result, dict) else "error"
    return {"worker": worker, "cancelled": cancelled,
            "error": f"the worker {worker or '?'} failed the task: {kind}: {message}"}
