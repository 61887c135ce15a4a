"""Deployments: a design handed through a pipeline, step by step, every hand-over stored.

The engine owns the per-host lock, the concurrency caps, cancel, retry, resume
after a restart, and rollback. It reports through ``Event`` objects (named after
Salt Cloud's provisioning events) to one callback; it knows nothing of chat.

Rollback follows Foreman's orchestration queue: when a step fails (or the
deployment is cancelled) and the pipeline has rollback on, the undos of the
completed steps run in reverse order, best effort: a failed undo is recorded
and announced, and the remaining undos still run. The failed step's own undo
runs too when it printed a mapping, since that says it did part of its work.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from clipboard import pipeline as pipeline_mod
from clipboard import redact
from clipboard.config import Config
from clipboard.errors import JarvisError
from clipboard.pipeline import Pipeline, Step
from clipboard.runner import Runner, StepResult
from clipboard.store import Deployment, Store
from clipboard.validate import hostname_of, normalize_design

log = logging.getLogger(__name__)


@dataclass
class Event:
    """Something a person may want to hear about. ``kind`` is one of:
    deploy.accepted, deploy.resumed, step.started, step.ok, step.failed, undo.started,
    undo.ok, undo.failed, deploy.ready, deploy.failed, deploy.cancelled."""

    kind: str
    deployment: Deployment
    step: str | None = None
    index: int | None = None
    total: int | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class Plan:
    """What a dry run shows: the steps it would run and the validated clipboard."""

    hostname: str
    pipeline: Pipeline
    clipboard: dict[str, Any]


@dataclass
class Source:
    """Where a design came from (``bot.sources.Fetched`` without the bytes)."""

    source: str
    kind: str = "file"
    sha256: str | None = None
    fetched_at: float | None = None


@dataclass
class _Run:
    deployment: Deployment
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    step_started: float | None = None


class HostBusy(JarvisError):
    """A deployment of this host is already running."""


class Engine:
    def __init__(self, config: Config, store: Store, runner: Runner,
                 notify: Callable[[Event], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.notify = notify or (lambda event: None)
        self.redact_keys = tuple(config.get("clipboard.redact_keys") or redact.DEFAULT_KEYS)
        self.default_timeout = float(config.get("runner.step_timeout"))
        self.tail_lines = int(config.get("runner.stderr_tail_lines"))
        self.running: dict[str, _Run] = {}
        self._global = asyncio.Semaphore(int(config.get("runner.max_concurrent_steps")))
        limits = config.get("runner.step_limits") or {}
        self._step_caps: dict[str, asyncio.Semaphore] = {
            name: asyncio.Semaphore(int(limit)) for name, limit in limits.items() if limit}
        self.in_flight: defaultdict[str, int] = defaultdict(int)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the runner and resume every deployment a previous jarvis left running."""
        await self.runner.start()
        for deployment in await self.store.active():
            await self._resume(deployment)

    async def stop(self) -> None:
        """Stop driving deployments without changing their state: the next start resumes them."""
        tasks = [run.task for run in self.running.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runner.close()

    # -- commands ------------------------------------------------------------------------
    def plan(self, design: dict[str, Any], pipeline_name: str | None = None) -> Plan:
        """Validate a design and choose its pipeline; raises before anything runs."""
        clipboard = normalize_design(design)
        hostname = hostname_of(clipboard)
        chosen = pipeline_mod.choose(self.config, pipeline_name,
                                     clipboard["instance"].get("provider"))
        if not chosen.steps:
            raise JarvisError(f"pipeline {chosen.name!r} has no steps")
        for step in chosen.steps:
            self.runner.resolve(step.name)
            if step.undo:
                self.runner.resolve(step.undo)
        return Plan(hostname, chosen, clipboard)

    def busy(self, hostname: str) -> _Run | None:
        return self.running.get(hostname)

    async def deploy(self, plan: Plan, source: Source, *, requester: str | None = None,
                     reply_to: dict[str, Any] | None = None, cluster: str | None = None,
                     meta: dict[str, Any] | None = None) -> Deployment:
        """Record the deployment and start it in the background; refuses a busy host."""
        self._check_free(plan.hostname)
        placeholder = _Run(Deployment(0, plan.hostname, source.source, plan.pipeline.name, [],
                                      "queued", time.time()))
        self.running[plan.hostname] = placeholder  # the lock is taken before the first await
        try:
            deployment = await self.store.create_deployment(
                hostname=plan.hostname, source=source.source, source_kind=source.kind,
                source_sha256=source.sha256, fetched_at=source.fetched_at,
                pipeline=plan.pipeline.name, steps=[s.as_dict() for s in plan.pipeline.steps],
                rollback=plan.pipeline.rollback, clipboard=plan.clipboard, requester=requester,
                reply_to=reply_to, cluster=cluster, meta=meta)
        except BaseException:
            del self.running[plan.hostname]
            raise
        placeholder.deployment = deployment
        self._emit("deploy.accepted", deployment)
        self._launch(placeholder, plan.clipboard, 0)
        return deployment

    async def cancel(self, hostname: str) -> Deployment:
        run = self.running.get(hostname)
        if run is None:
            raise JarvisError(f"{hostname}: nothing is running")
        run.cancel.set()
        return run.deployment

    async def retry(self, hostname: str, *, requester: str | None = None,
                    reply_to: dict[str, Any] | None = None) -> Deployment:
        """Run a failed or cancelled deployment again from the step that failed."""
        self._check_free(hostname)
        deployment = await self.store.latest(hostname)
        if deployment is None:
            raise JarvisError(f"{hostname}: never deployed")
        if deployment.state not in ("failed", "cancelled"):
            raise JarvisError(f"{hostname}: deployment #{deployment.id} is {deployment.state}; "
                              "only a failed or cancelled one can be retried")
        if deployment.meta.get("rolled_back"):
            raise JarvisError(f"{hostname}: deployment #{deployment.id} was rolled back; "
                              "deploy it again instead")
        start = max(deployment.current_step - 1, 0)
        clipboard = await self.store.clipboard(deployment.id)
        assert clipboard is not None
        if reply_to is not None:
            deployment.reply_to = reply_to
        run = _Run(deployment)
        self.running[hostname] = run
        await self.store.update_deployment(deployment.id, state="running", error=None,
                                           finished_at=None)
        deployment.state, deployment.error = "running", None
        self._emit("deploy.resumed", deployment, index=start + 1, total=len(deployment.steps))
        self._launch(run, clipboard, start)
        return deployment

    # -- internals -----------------------------------------------------------------------
    def _check_free(self, hostname: str) -> None:
        run = self.running.get(hostname)
        if run is not None:
            d = run.deployment
            who = f", requested by {d.requester}" if d.requester else ""
            ident = f"#{d.id}" if d.id else "a deployment being recorded"
            raise HostBusy(f"{hostname} is already being deployed ({ident}, step "
                           f"{max(d.current_step, 1)}/{len(d.steps) or '?'}{who}); "
                           f"wait for it or cancel {hostname}")

    async def _resume(self, deployment: Deployment) -> None:
        await self.store.interrupted_steps(deployment.id)
        start = max(deployment.current_step - 1, 0)
        clipboard = await self.store.clipboard(deployment.id, start)
        if clipboard is None:
            clipboard = await self.store.clipboard(deployment.id)
        assert clipboard is not None
        run = _Run(deployment)
        self.running[deployment.hostname] = run
        log.info("resuming deployment #%d of %s at step %d", deployment.id,
                 deployment.hostname, start + 1)
        self._emit("deploy.resumed", deployment, index=start + 1, total=len(deployment.steps))
        self._launch(run, clipboard, start)

    def _launch(self, run: _Run, clipboard: dict[str, Any], start: int) -> None:
        run.task = asyncio.create_task(self._drive(run, clipboard, start),
                                       name=f"deploy-{run.deployment.hostname}")

    async def _drive(self, run: _Run, clipboard: dict[str, Any], start: int) -> None:
        deployment = run.deployment
        try:
            await self._execute(run, clipboard, start)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not take the bot down with it
            log.exception("deployment #%d of %s crashed", deployment.id, deployment.hostname)
            deployment.state, deployment.error = "failed", f"internal error: {exc}"
            await self.store.update_deployment(deployment.id, state="failed",
                                               error=deployment.error, finished_at=time.time())
            self._emit("deploy.failed", deployment, error=deployment.error)
        finally:
            if self.running.get(deployment.hostname) is run:
                del self.running[deployment.hostname]

    async def _execute(self, run: _Run, clipboard: dict[str, Any], start: int) -> None:
        deployment = run.deployment
        steps = [Step(s["step"], s.get("timeout"), s.get("undo")) for s in deployment.steps]
        total = len(steps)
        done: list[tuple[int, Step]] = []
        for i in range(start):
            done.append((i, steps[i]))
        for i in range(start, total):
            step = steps[i]
            if run.cancel.is_set():
                await self._finish_cancelled(run, clipboard, done, i)
                return
            result = await self._run_step(run, step, i, total, clipboard)
            if result.ok:
                clipboard = result.clipboard
                done.append((i, step))
                continue
            clipboard = result.clipboard
            if result.printed is not None:
                done.append((i, step))
            if result.cancelled:
                await self._finish_cancelled(run, clipboard, done, i)
                return
            deployment.state, deployment.error = "failed", result.error
            await self.store.update_deployment(deployment.id, state="failed", error=result.error,
                                               finished_at=time.time())
            self._emit("deploy.failed", deployment, step=step.name, index=i + 1, total=total,
                       seconds=result.seconds, error=result.error)
            if deployment.rollback:
                await self._rollback(run, clipboard, done)
            return
        deployment.state = "ready"
        deployment.finished_at = time.time()
        await self.store.update_deployment(deployment.id, state="ready",
                                           finished_at=deployment.finished_at)
        self._emit("deploy.ready", deployment, total=total)

    async def _run_step(self, run: _Run, step: Step, i: int, total: int,
                        clipboard: dict[str, Any]) -> StepResult:
        deployment = run.deployment
        async with self._slot(step.name):
            deployment.current_step = i + 1
            step_id = await self.store.step_started(deployment.id, i + 1, step.name,
                                                    current_step=i + 1)
            deployment.state = "running"
            run.step_started = time.time()
            self._emit("step.started", deployment, step=step.name, index=i + 1, total=total)
            result = await self.runner.run(step.name, clipboard, timeout=self._timeout(step),
                                           cancel=run.cancel)
        run.step_started = None
        error = self._scrub(result.error, result.clipboard)
        result.error = error
        state = "ok" if result.ok else ("cancelled" if result.cancelled else "failed")
        await self.store.step_finished(
            step_id, state=state, exit_status=result.exit_status, error=error,
            stderr_tail=self._scrub_lines(result.stderr_tail(self.tail_lines), result.clipboard),
            finished_at=result.finished, deployment_id=deployment.id, after_step=i + 1,
            clipboard=result.clipboard if (result.ok or result.printed is not None) else None,
            label=state)
        self._emit("step.ok" if result.ok else "step.failed", deployment, step=step.name,
                   index=i + 1, total=total, seconds=result.seconds, error=error)
        return result

    async def _finish_cancelled(self, run: _Run, clipboard: dict[str, Any],
                                done: list[tuple[int, Step]], i: int) -> None:
        deployment = run.deployment
        deployment.state = "cancelled"
        deployment.error = f"cancelled at step {i + 1}/{len(deployment.steps)}"
        await self.store.update_deployment(deployment.id, state="cancelled",
                                           error=deployment.error, finished_at=time.time())
        self._emit("deploy.cancelled", deployment, index=i + 1, total=len(deployment.steps))
        if deployment.rollback:
            await self._rollback(run, clipboard, done)

    async def _rollback(self, run: _Run, clipboard: dict[str, Any],
                        done: list[tuple[int, Step]]) -> None:
        deployment = run.deployment
        undone = []
        for i, step in reversed(done):
            undo = step.undo or self._declared_undo(step.name)
            if not undo:
                continue
            step_id = await self.store.step_started(deployment.id, i + 1, undo, kind="undo")
            self._emit("undo.started", deployment, step=undo, index=i + 1)
            result = await self.runner.run(undo, clipboard, timeout=self.default_timeout)
            error = self._scrub(result.error, result.clipboard)
            await self.store.step_finished(
                step_id, state="ok" if result.ok else "failed", exit_status=result.exit_status,
                error=error,
                stderr_tail=self._scrub_lines(result.stderr_tail(self.tail_lines), result.clipboard),
                finished_at=result.finished, deployment_id=deployment.id, after_step=-1,
                clipboard=result.clipboard, label=f"undo {undo}")
            clipboard = result.clipboard
            undone.append({"step": step.name, "undo": undo, "ok": result.ok, "error": error})
            self._emit("undo.ok" if result.ok else "undo.failed", deployment, step=undo,
                       index=i + 1, seconds=result.seconds, error=error)
        deployment.meta["rolled_back"] = undone
        await self.store.update_deployment(deployment.id, meta=deployment.meta)

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

    def _slot(self, step: str) -> "_Slots":
        return _Slots(self, step)

    def _scrub(self, text: str | None, clipboard: dict[str, Any]) -> str | None:
        if not text:
            return text
        return redact.scrub(text, redact.secret_values(clipboard, self.redact_keys))

    def _scrub_lines(self, lines: list[str], clipboard: dict[str, Any]) -> list[str]:
        secrets = redact.secret_values(clipboard, self.redact_keys)
        return [redact.scrub(line, secrets) for line in lines]

    def _emit(self, kind: str, deployment: Deployment, **fields: Any) -> None:
        try:
            self.notify(Event(kind, deployment, **fields))
        except Exception:
            log.exception("event handler failed for %s", kind)


class _Slots:
    """Hold the global step slot and the step's own cap, counting what is in flight."""

    def __init__(self, engine: Engine, step: str) -> None:
        self.engine = engine
        self.step = step
        self.cap = engine._step_caps.get(step)

    async def __aenter__(self) -> None:
        if self.cap is not None:
            await self.cap.acquire()
        await self.engine._global.acquire()
        self.engine.in_flight[self.step] += 1

    async def __aexit__(self, *_: Any) -> None:
        self.engine.in_flight[self.step] -= 1
        self.engine._global.release()
        if self.cap is not None:
            self.cap.release()
