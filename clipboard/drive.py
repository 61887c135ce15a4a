"""Driving one deployment: its steps in order, each in its slots, every hand-over
stored, and — when it stops short — its rollback.

Rollback follows Foreman's orchestration queue: when a step fails (or the
deployment is cancelled) and the pipeline has rollback on, the undos of the
completed steps run in reverse order, best effort: a failed undo is recorded
and announced, and the remaining undos still run. The failed step's own undo
runs too when it printed a mapping, since that says it did part of its work.

The queue of undos is stored before the first one runs, and each result as it
comes, so a rollback interrupted by a crash carries on where it stopped when
the deployment is taken up again (undos are ensure-style, like steps: the
interrupted one runs again). It ends ``rolled back`` or ``rollback failed``.

Every change of a deployment's state goes through ``transition``: the store
first, then the object in memory, then the waits, then the event, always in
that order, so whoever hears an event and asks ``status`` reads what it said.

A step's stderr and error are scrubbed (``clipboard.redact.Scrubber``) before they
are stored or told: against every secret the deployment has held — each stored
clipboard version, read once per drive, plus every clipboard a step hands back —
and the configuration's secrets. Not against the clipboard the step printed alone:
a step that fails after printing part of the clipboard would otherwise leak the
root password it left out.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from clipboard import document, redact
from clipboard.config import Config
from clipboard.errors import StoreError
from clipboard.records import Event, EventKind, State, StepKind, StepState
from clipboard.run import Run
from clipboard.runner import Runner, StepContext, StepResult
from clipboard.slots import Slots
from clipboard.steps import Step, Wait
from clipboard.store import Store
from clipboard.waits import Waits

log = logging.getLogger(__name__)

Done = list[tuple[int, Step]]


class Driver:
    def __init__(self, config: Config, store: Store, runner: Runner,
                 running: MutableMapping[str, Run], notify: Callable[[Event], None]) -> None:
        self.store = store
        self.runner = runner
        self.running = running
        self.notify = notify
        self.slots = Slots(config)
        self.waits = Waits(store, running)
        self.redact_keys = config.limits.redact_keys
        self.configured = config.secrets
        self.known: dict[int, set[str]] = {}  # deployment id -> every secret it has held
        self.default_timeout = config.runner.step_timeout
        self.tail_lines = config.runner.stderr_tail_lines
        self.wait_timeout = config.clusters.wait_timeout

    # -- starting --------------------------------------------------------------------------
    def launch(self, run: Run, clipboard: dict[str, Any], start: int) -> None:
        """Drive ``run`` in the background from step ``start`` (0-based) with ``clipboard``."""
        steps = run.deployment.steps
        self.runner.prewarm(s.name for s in steps[start:])
        run.reached = {s.name for s in steps[:start]}
        run.task = asyncio.create_task(self._drive(run, self._execute(run, clipboard, start)),
                                       name=f"deploy-{run.deployment.hostname}")

    def launch_rollback(self, run: Run, clipboard: dict[str, Any]) -> None:
        """Carry on with a stored rollback (its deployment was taken up while rolling back)."""
        run.task = asyncio.create_task(self._drive(run, self._roll_back(run, clipboard)),
                                       name=f"rollback-{run.deployment.hostname}")

    async def _drive(self, run: Run, work: Any) -> None:
        deployment = run.deployment
        try:
            await work
        except asyncio.CancelledError:
            raise
        except StoreError as exc:  # the store's file, not a bug: its one line says what to do
            log.error("deployment #%d of %s stopped: %s", deployment.id, deployment.hostname, exc)
            await self.transition(run, State.FAILED, EventKind.FAILED, error=str(exc),
                                  finished=True)
        except Exception as exc:  # a bug here must not take the bot down with it
            log.exception("deployment #%d of %s crashed", deployment.id, deployment.hostname)
            scrubber = await self._scrubber(run)
            await self.transition(run, State.FAILED, EventKind.FAILED,
                                  error=scrubber.scrub(f"internal error: {exc}"), finished=True)
        finally:
            self.known.pop(deployment.id, None)
            if self.running.get(deployment.hostname) is run:
                del self.running[deployment.hostname]
            self.waits.wake(deployment)

    # -- the one place a state changes -------------------------------------------------------
    async def transition(self, run: Run, state: State, kind: EventKind | None, *,
                         error: str | None = None, finished: bool = False,
                         current_step: int | None = None,
                         event: dict[str, Any] | None = None) -> None:
        """Store the new state, mirror it in memory, wake the waits, then tell (the
        event carries ``error`` unless ``event`` says otherwise)."""
        d = run.deployment
        fields: dict[str, Any] = {"state": state, "meta": d.meta}
        if error is not None or state == State.RUNNING:
            fields["error"] = error
        if finished:
            fields["finished_at"] = time.time()
        if current_step is not None:
            fields["current_step"] = current_step
        await self.store.update_deployment(d.id, **fields)
        d.state = state
        if "error" in fields:
            d.error = error
        if finished:
            d.finished_at = fields["finished_at"]
        if current_step is not None:
            d.current_step = current_step
        self.waits.wake(d)
        if kind is not None:
            self.emit(kind, d, **{"total": len(d.steps), "error": error, **(event or {})})

    def emit(self, kind: EventKind, deployment: Any, **fields: Any) -> None:
        try:
            self.notify(Event(kind, deployment, **fields))
        except Exception:
            log.exception("event handler failed for %s", kind)

    # -- steps ---------------------------------------------------------------------------------
    async def _execute(self, run: Run, clipboard: dict[str, Any], start: int) -> None:
        deployment = run.deployment
        run.text = document.dump(clipboard)
        steps = deployment.steps
        total = len(steps)
        done: Done = [(i, steps[i]) for i in range(start)]
        for i in range(start, total):
            step = steps[i]
            if run.stopping:
                await self._stop_short(run, clipboard, done, i, cancelled=True)
                return
            wait = step.wait
            if wait is not None:
                result = await self._run_wait(run, step, wait, i, total, clipboard)
            else:
                ran = await self._run_step(run, step, i, total, clipboard)
                if ran is None:  # stopped while queued for a slot
                    await self._stop_short(run, clipboard, done, i, cancelled=True)
                    return
                result = ran
            clipboard = result.clipboard
            if result.ok:
                run.reached.add(step.name)
                if wait is None:
                    done.append((i, step))
                self.waits.wake(deployment)
                continue
            if result.printed is not None:
                done.append((i, step))
            await self._stop_short(run, clipboard, done, i, cancelled=result.cancelled,
                                   result=result, step=step)
            return
        ends_as = deployment.ends_as
        await self.transition(run, ends_as, EventKind.DECOMMISSIONED
                              if ends_as == State.DECOMMISSIONED else EventKind.READY,
                              finished=True)

    async def _run_step(self, run: Run, step: Step, i: int, total: int,
                        clipboard: dict[str, Any]) -> StepResult | None:
        """Run one worker step in its slots; None when the run was stopped before it began."""
        async with self.slots.slot(step.name, run.provider):
            if run.stopping:
                return None
            step_id = await self._step_began(run, step, i, total)
            result = await self.runner.run(step.name, clipboard, timeout=self._timeout(step),
                                           cancel=run.killed, text=run.text,
                                           context=self._context(run, i + 1, step_id))
        run.step_started = None
        if result.ok and result.printed is not None:
            run.text = result.text
        await self._step_ended(run, step, step_id, i, total, result,
                               text=result.text if result.printed is not None else run.text)
        return result

    async def _run_wait(self, run: Run, step: Step, wait: Wait, i: int, total: int,
                        clipboard: dict[str, Any]) -> StepResult:
        """The built-in ``wait:host``: recorded like a step, run without a process or a slot."""
        step_id = await self._step_began(run, step, i, total)
        started = run.step_started or time.time()
        ok, error, cancelled = await self.waits.hold(
            run, wait, wait.timeout or step.timeout or self.wait_timeout)
        run.step_started = None
        result = StepResult(ok, clipboard, error=error, cancelled=cancelled, started=started,
                            finished=time.time())
        await self._step_ended(run, step, step_id, i, total, result, text=run.text)
        return result

    async def _step_began(self, run: Run, step: Step, i: int, total: int) -> int:
        deployment = run.deployment
        deployment.current_step = i + 1
        step_id = await self.store.step_started(deployment.id, i + 1, step.name,
                                                current_step=i + 1, attempt=deployment.attempt)
        deployment.state = State.RUNNING
        run.step_started = time.time()
        self.emit(EventKind.STEP_STARTED, deployment, step=step.name, index=i + 1, total=total)
        return step_id

    async def _step_ended(self, run: Run, step: Step, step_id: int, i: int, total: int,
                          result: StepResult, text: str | None) -> None:
        deployment = run.deployment
        scrubber = await self._scrubber(run, result.clipboard, result.printed)
        result.error = scrubber.scrub(result.error) if result.error else result.error
        state = (StepState.OK if result.ok
                 else StepState.CANCELLED if result.cancelled else StepState.FAILED)
        kept = result.ok or result.printed is not None
        await self.store.step_finished(
            step_id, state=state, exit_status=result.exit_status, error=result.error,
            stderr_tail=scrubber.lines(result.stderr_tail(self.tail_lines)),
            finished_at=result.finished, deployment_id=deployment.id, after_step=i + 1,
            clipboard=result.clipboard if kept else None, label=state,
            text=text if kept else None, attempt=deployment.attempt, worker=result.worker)
        self.emit(EventKind.STEP_OK if result.ok else EventKind.STEP_FAILED, deployment,
                  step=step.name, index=i + 1, total=total, seconds=result.seconds,
                  error=result.error)

    # -- stopping short --------------------------------------------------------------------
    async def _stop_short(self, run: Run, clipboard: dict[str, Any], done: Done, i: int, *,
                          cancelled: bool, result: StepResult | None = None,
                          step: Step | None = None) -> None:
        """A step failed or the run was cancelled: record it, and roll back when the
        pipeline says so and something was done."""
        d = run.deployment
        total = len(d.steps)
        event: dict[str, Any]
        if cancelled:
            by = d.meta.get("cancelled_by")
            error = f"cancelled at step {i + 1}/{total}" + (f" by {by}" if by else "")
            kind, event = EventKind.CANCELLED, {"index": i + 1}
        else:
            assert result is not None and step is not None
            error = result.error or "failed"
            kind, event = EventKind.FAILED, {"step": step.name, "index": i + 1,
                                             "seconds": result.seconds}
        queue = self._undo_queue(done) if d.rollback else []
        if not queue:
            await self.transition(run, State.CANCELLED if cancelled else State.FAILED, kind,
                                  error=error, finished=True, current_step=i + 1, event=event)
            return
        cause = State.CANCELLED if cancelled else State.FAILED  # what it ends as without undos
        d.meta["rollback"] = {"cause": cause, "queue": queue}
        d.meta["rolled_back"] = []
        await self.transition(run, State.ROLLING_BACK, kind, error=error, current_step=i + 1,
                              event=event)
        await self._roll_back(run, clipboard)

    def _undo_queue(self, done: Done) -> list[dict[str, Any]]:
        """The undos of the steps done, last first: what a rollback will run."""
        queue = []
        for i, step in reversed(done):
            undo = step.undo or self._declared_undo(step.name)
            if undo:
                queue.append({"index": i + 1, "step": step.name, "undo": undo})
        return queue

    async def _roll_back(self, run: Run, clipboard: dict[str, Any]) -> None:
        """Run the stored queue's undos that have not run yet; end rolled back or not."""
        d = run.deployment
        queue: list[dict[str, Any]] = d.meta["rollback"]["queue"]
        undone: list[dict[str, Any]] = d.meta.setdefault("rolled_back", [])
        for item in queue[len(undone):]:
            undo, index = item["undo"], item["index"]
            step_id = await self.store.step_started(d.id, index, undo, kind=StepKind.UNDO,
                                                    attempt=d.attempt)
            self.emit(EventKind.UNDO_STARTED, d, step=undo, index=index)
            result = await self.runner.run(undo, clipboard, timeout=self._timeout(Step(undo)),
                                           context=self._context(run, index, step_id,
                                                                 StepKind.UNDO))
            scrubber = await self._scrubber(run, result.clipboard, result.printed)
            error = scrubber.scrub(result.error) if result.error else result.error
            await self.store.step_finished(
                step_id, state=StepState.OK if result.ok else StepState.FAILED,
                exit_status=result.exit_status,
                error=error, stderr_tail=scrubber.lines(result.stderr_tail(self.tail_lines)),
                finished_at=result.finished, deployment_id=d.id, after_step=-1,
                clipboard=result.clipboard, label=f"undo {undo}", attempt=d.attempt,
                worker=result.worker)
            clipboard = result.clipboard
            undone.append({"step": item["step"], "undo": undo, "ok": result.ok, "error": error})
            # stored before it is announced, so a status asked on hearing it shows it
            await self.store.update_deployment(d.id, meta=d.meta)
            self.emit(EventKind.UNDO_OK if result.ok else EventKind.UNDO_FAILED, d, step=undo,
                      index=index, seconds=result.seconds, error=error)
        failed = [u for u in undone if not u["ok"]]
        if failed:
            await self.transition(run, State.ROLLBACK_FAILED, EventKind.ROLLBACK_FAILED,
                                  finished=True, event={"step": failed[0]["undo"],
                                                        "error": failed[0]["error"]})
        else:
            await self.transition(run, State.ROLLED_BACK, EventKind.ROLLED_BACK, finished=True)

    # -- helpers ---------------------------------------------------------------------------
    def _context(self, run: Run, index: int, step_id: int,
                 kind: StepKind = StepKind.STEP) -> StepContext:
        """What a remote runner names, routes and reports this step by."""
        d = run.deployment
        return StepContext(d.id, index, d.attempt, step_id, kind=kind, created_at=d.created_at,
                           labels=d.meta.get("labels") or {},
                           on_started=functools.partial(self.store.step_worker, step_id))

    def _declared_undo(self, step: str) -> str | None:
        info = self.runner.tasks.get(step)
        return info.get("undo") if info else None

    def _timeout(self, step: Step) -> float:
        if step.timeout:
            return float(step.timeout)
        info = self.runner.tasks.get(step.name)
        if info and info.get("timeout"):
            return float(info["timeout"])
        return self.default_timeout

    async def _scrubber(self, run: Run, *clipboards: dict[str, Any] | None) -> redact.Scrubber:
        """A scrubber for everything ``run``'s deployment has held: its stored clipboard
        versions (read the first time, then kept while it is driven), the ``clipboards``
        a step just handed back, and the configuration's secrets."""
        d = run.deployment
        known = self.known.get(d.id)
        if known is None:
            known = set()
            try:
                known = await self.store.secret_values(d.id, self.redact_keys)
                self.known[d.id] = known
            except Exception:  # scrub with what is at hand (and read again next time)
                log.exception("cannot read the clipboards of deployment #%d", d.id)
        for clipboard in clipboards:
            if clipboard:
                known |= redact.secret_values(clipboard, self.redact_keys)
        return redact.Scrubber(known | self.configured)
