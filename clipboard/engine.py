"""Deployments: a design handed through a pipeline, step by step, every hand-over stored.

The engine owns the per-host lock, the concurrency caps, cancel, retry, resume
after a restart, and rollback. It reports through ``Event`` objects (named after
Salt Cloud's provisioning events) to one callback; it knows nothing of chat.

A cluster is many deployments under one cluster id (``shop#1``), started
together after every host validated. Its hosts order themselves with the
built-in ``wait:host`` step, which the engine runs without a worker process and
without a step slot: it watches the in-memory progress of the hosts it drives
(and the store for those it does not), woken by their step and state events, not
by polling. Step slots are bounded three ways, across every deployment: the
global cap, each step's own cap and each provider's cap on its provider steps.
Cancelling a cluster drains it: no new step starts, running ones finish.

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

from clipboard import cluster as cluster_mod
from clipboard import document
from clipboard import pipeline as pipeline_mod
from clipboard import redact
from clipboard.config import Config
from clipboard.errors import JarvisError
from clipboard.locks import Locks
from clipboard.pipeline import Pipeline, Step, Wait
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
    """A deployment being driven. ``cancel`` kills its running step; ``drain`` only
    stops it before the next one. ``reached`` holds the steps it has finished ok
    (what other hosts' waits look at); ``killed`` completes with ``cancel`` (the runner
    waits on it directly, cheaper than a task per step); ``text`` is the YAML of its
    clipboard (as the last worker printed it), handed to the next worker and to the
    store as is: dumping it per step would cost more than a no-op step."""

    deployment: Deployment
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    drain: asyncio.Event = field(default_factory=asyncio.Event)
    killed: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task[None] | None = None
    step_started: float | None = None
    reached: set[str] = field(default_factory=set)
    text: str | None = None

    @property
    def stopping(self) -> bool:
        return self.cancel.is_set() or self.drain.is_set()

    @property
    def provider(self) -> str | None:
        return (self.deployment.meta.get("labels") or {}).get("provider")


@dataclass
class _Target:
    id: int
    hostname: str


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
        providers = config.get("runner.provider_limits") or {}
        self._provider_caps: dict[str, asyncio.Semaphore] = {
            name.lower(): asyncio.Semaphore(int(limit)) for name, limit in providers.items()
            if limit}
        self._provider_modules = {str(m) for m in config.get("runner.provider_modules") or []}
        self.wait_timeout = float(config.get("clusters.wait_timeout"))
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self._wakers: defaultdict[str | None, set[asyncio.Event]] = defaultdict(set)
        self.locks = Locks(store)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the runner and resume every deployment a previous jarvis left running."""
        await self.runner.start()
        await self.locks.load()
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
            wait = step.wait
            if wait is not None and wait.host == hostname:
                raise JarvisError(f"{hostname}: step {step.name!r} waits for the host itself")
        return Plan(hostname, chosen, clipboard)

    def plan_cluster(self, design: dict[str, Any], pipeline_name: str | None = None
                     ) -> cluster_mod.ClusterPlan:
        """Expand and validate every host of a cluster design; raises before anything runs."""
        return cluster_mod.plan(design, self.config, self.plan, pipeline_name)

    def busy(self, hostname: str) -> _Run | None:
        return self.running.get(hostname)

    async def deploy(self, plan: Plan, source: Source, *, requester: str | None = None,
                     reply_to: dict[str, Any] | None = None, cluster: str | None = None,
                     meta: dict[str, Any] | None = None) -> Deployment:
        """Record the deployment and start it in the background; refuses a busy host."""
        self._check_free(plan.hostname)
        placeholder = self._placeholder(plan)
        self.running[plan.hostname] = placeholder  # the lock is taken before the first await
        try:
            deployment = await self.store.create_deployment(
                cluster=cluster, **self._spec(plan, source, requester, reply_to, meta))
        except BaseException:
            del self.running[plan.hostname]
            raise
        placeholder.deployment = deployment
        self._emit("deploy.accepted", deployment)
        self._launch(placeholder, plan.clipboard, 0)
        return deployment

    async def deploy_cluster(self, plan: cluster_mod.ClusterPlan, source: Source, *,
                             requester: str | None = None,
                             reply_to: dict[str, Any] | None = None
                             ) -> tuple[str, list[Deployment]]:
        """Record every host under one new cluster id, then start them all (launch order:
        hosts that wait on nobody first). Refuses the whole cluster if any host is busy
        or locked."""
        self.locks.check(*(h.hostname for h in plan.hosts))
        busy = [h.hostname for h in plan.hosts if h.hostname in self.running]
        if busy:
            shown = ", ".join(busy[:10]) + (f" and {len(busy) - 10} more" if len(busy) > 10 else "")
            raise HostBusy(f"cluster {plan.name}: {shown} already being deployed; "
                           "nothing was started")
        runs = [self._placeholder(h.plan) for h in plan.hosts]
        for host, run in zip(plan.hosts, runs):
            self.running[host.hostname] = run
        try:
            cluster_id, deployments = await self.store.create_cluster(plan.name, [
                self._spec(h.plan, source, requester, reply_to, None) for h in plan.hosts])
        except BaseException:
            for host in plan.hosts:
                del self.running[host.hostname]
            raise
        for run, deployment in zip(runs, deployments):
            run.deployment = deployment
            self._emit("deploy.accepted", deployment)
        for host, run in zip(plan.hosts, runs):
            self._launch(run, host.plan.clipboard, 0)
        return cluster_id, deployments

    def _placeholder(self, plan: Plan) -> _Run:
        return _Run(Deployment(0, plan.hostname, "", plan.pipeline.name, [], "queued",
                               time.time()))

    def _spec(self, plan: Plan, source: Source, requester: str | None,
              reply_to: dict[str, Any] | None, meta: dict[str, Any] | None) -> dict[str, Any]:
        meta = dict(meta or {})
        labels = cluster_mod.labels_of(plan.clipboard, self.redact_keys)
        if "provider" not in labels and self.config.get("providers.default"):
            labels["provider"] = str(self.config.get("providers.default")).lower()
        meta.setdefault("labels", labels)
        return dict(hostname=plan.hostname, source=source.source, source_kind=source.kind,
                    source_sha256=source.sha256, fetched_at=source.fetched_at,
                    pipeline=plan.pipeline.name, steps=[s.as_dict() for s in plan.pipeline.steps],
                    rollback=plan.pipeline.rollback, clipboard=plan.clipboard,
                    requester=requester, reply_to=reply_to, meta=meta)

    async def cancel(self, hostname: str) -> Deployment:
        run = self.running.get(hostname)
        if run is None:
            raise JarvisError(f"{hostname}: nothing is running")
        run.cancel.set()
        if not run.killed.done():
            run.killed.set_result(None)
        return run.deployment

    async def cancel_cluster(self, cluster: str) -> list[Deployment]:
        """Drain a cluster: no host starts another step; running steps finish, then each
        host ends cancelled (its completed steps undone when its pipeline rolls back)."""
        runs = [run for run in self.running.values() if run.deployment.cluster == cluster]
        if not runs:
            raise JarvisError(f"{cluster}: no host of it is running")
        for run in runs:
            run.drain.set()
        return [run.deployment for run in runs]

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
        self._check_free(hostname)  # again: another command may have come in while we read
        run = self.running[hostname] = _Run(deployment)
        try:
            clipboard, start = await self._prepare_retry(run, reply_to)
        except BaseException:
            del self.running[hostname]
            raise
        self._launch(run, clipboard, start)
        return deployment

    async def retry_cluster(self, cluster: str, *,
                            reply_to: dict[str, Any] | None = None) -> list[Deployment]:
        """Retry the failed and cancelled hosts of a cluster run, and only them: from the
        step that failed, or from the start for a host whose steps were rolled back.
        Every one is locked and marked running before any starts, so their waits see
        each other coming back instead of failing on a stale state."""
        members = await self.store.by_cluster(cluster)
        failed = [d for d in members if d.state in ("failed", "cancelled")]
        if not failed:
            counts = ", ".join(f"{n} {state}" for state, n in _counts(members).items())
            raise JarvisError(f"{cluster}: no failed host to retry ({counts or 'no hosts'})")
        self.locks.check(*(d.hostname for d in failed))
        newer = [d.hostname for d in failed
                 if (latest := await self.store.latest(d.hostname)) and latest.id != d.id]
        busy = [d.hostname for d in failed if d.hostname in self.running]
        if busy or newer:
            raise HostBusy(f"{cluster}: not retried, since " + "; ".join(
                part for part in (busy and f"{', '.join(busy)} being deployed now",
                                  newer and f"{', '.join(newer)} deployed again since") if part))
        runs = [_Run(d) for d in failed]
        for run in runs:  # every lock taken before the first await
            self.running[run.deployment.hostname] = run
        prepared = []
        try:
            for run in runs:
                prepared.append((run, *await self._prepare_retry(run, reply_to)))
        except BaseException:
            for run in runs:
                del self.running[run.deployment.hostname]
            raise
        for run, clipboard, start in prepared:
            self._launch(run, clipboard, start)
        return [run.deployment for run in runs]

    async def _prepare_retry(self, run: _Run, reply_to: dict[str, Any] | None
                             ) -> tuple[dict[str, Any], int]:
        """Mark a locked deployment running again; the clipboard and step it restarts at."""
        deployment = run.deployment
        if deployment.meta.pop("rolled_back", None) is not None:
            start = 0
            clipboard = await self.store.clipboard(deployment.id, 0)
        else:
            start = max(deployment.current_step - 1, 0)
            clipboard = await self.store.clipboard(deployment.id)
        assert clipboard is not None
        if reply_to is not None:
            deployment.reply_to = reply_to
        await self.store.update_deployment(deployment.id, state="running", error=None,
                                           finished_at=None, meta=deployment.meta)
        deployment.state, deployment.error = "running", None
        deployment.current_step = start + 1
        self._emit("deploy.resumed", deployment, index=start + 1, total=len(deployment.steps))
        return clipboard, start

    # -- internals -----------------------------------------------------------------------
    def _check_free(self, hostname: str) -> None:
        self.locks.check(hostname)
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
        self.runner.prewarm(s["step"] for s in run.deployment.steps[start:])
        run.reached = {s["step"] for s in run.deployment.steps[:start]}
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
            self._wake(deployment)

    async def _execute(self, run: _Run, clipboard: dict[str, Any], start: int) -> None:
        deployment = run.deployment
        run.text = document.dump(clipboard)
        steps = [Step(s["step"], s.get("timeout"), s.get("undo")) for s in deployment.steps]
        total = len(steps)
        done: list[tuple[int, Step]] = []
        for i in range(start):
            done.append((i, steps[i]))
        for i in range(start, total):
            step = steps[i]
            if run.stopping:
                await self._finish_cancelled(run, clipboard, done, i)
                return
            wait = step.wait
            if wait is not None:
                result = await self._run_wait(run, step, wait, i, total, clipboard)
            else:
                ran = await self._run_step(run, step, i, total, clipboard)
                if ran is None:  # stopped while queued for a slot
                    await self._finish_cancelled(run, clipboard, done, i)
                    return
                result = ran
            if result.ok:
                clipboard = result.clipboard
                run.reached.add(step.name)
                if wait is None:
                    done.append((i, step))
                self._wake(deployment)
                continue
            clipboard = result.clipboard
            if result.printed is not None:
                done.append((i, step))
            if result.cancelled:
                await self._finish_cancelled(run, clipboard, done, i)
                return
            await self.store.update_deployment(deployment.id, state="failed", error=result.error,
                                               finished_at=time.time())
            deployment.state, deployment.error = "failed", result.error
            self._wake(deployment)
            self._emit("deploy.failed", deployment, step=step.name, index=i + 1, total=total,
                       seconds=result.seconds, error=result.error)
            if deployment.rollback:
                await self._rollback(run, clipboard, done)
            return
        deployment.finished_at = time.time()
        await self.store.update_deployment(deployment.id, state="ready",
                                           finished_at=deployment.finished_at)
        deployment.state = "ready"
        self._wake(deployment)
        self._emit("deploy.ready", deployment, total=total)

    async def _run_step(self, run: _Run, step: Step, i: int, total: int,
                        clipboard: dict[str, Any]) -> StepResult | None:
        """Run one worker step in its slots; None when the run was stopped before it began."""
        deployment = run.deployment
        async with self._slot(step.name, run.provider):
            if run.stopping:
                return None
            deployment.current_step = i + 1
            step_id = await self.store.step_started(deployment.id, i + 1, step.name,
                                                    current_step=i + 1)
            deployment.state = "running"
            run.step_started = time.time()
            self._emit("step.started", deployment, step=step.name, index=i + 1, total=total)
            result = await self.runner.run(step.name, clipboard, timeout=self._timeout(step),
                                           cancel=run.killed, text=run.text)
        run.step_started = None
        if result.ok and result.printed is not None:
            run.text = result.text
        error = self._scrub(result.error, result.clipboard)
        result.error = error
        state = "ok" if result.ok else ("cancelled" if result.cancelled else "failed")
        tail = result.stderr_tail(self.tail_lines)
        await self.store.step_finished(
            step_id, state=state, exit_status=result.exit_status, error=error,
            stderr_tail=self._scrub_lines(tail, result.clipboard) if tail else [],
            finished_at=result.finished, deployment_id=deployment.id, after_step=i + 1,
            clipboard=result.clipboard if (result.ok or result.printed is not None) else None,
            label=state, text=result.text if result.printed is not None else run.text)
        self._emit("step.ok" if result.ok else "step.failed", deployment, step=step.name,
                   index=i + 1, total=total, seconds=result.seconds, error=error)
        return result

    # -- waits -----------------------------------------------------------------------------
    async def _run_wait(self, run: _Run, step: Step, wait: Wait, i: int, total: int,
                        clipboard: dict[str, Any]) -> StepResult:
        """The built-in ``wait:host``: recorded like a step, run without a process or a slot."""
        deployment = run.deployment
        deployment.current_step = i + 1
        step_id = await self.store.step_started(deployment.id, i + 1, step.name,
                                                current_step=i + 1)
        deployment.state = "running"
        run.step_started = started = time.time()
        self._emit("step.started", deployment, step=step.name, index=i + 1, total=total)
        timeout = wait.timeout or step.timeout or self.wait_timeout
        ok, error, cancelled = await self._await_hosts(run, wait, timeout)
        run.step_started = None
        result = StepResult(ok, clipboard, error=error, cancelled=cancelled, started=started,
                            finished=time.time())
        state = "ok" if ok else ("cancelled" if cancelled else "failed")
        await self.store.step_finished(
            step_id, state=state, exit_status=None, error=error, stderr_tail=[],
            finished_at=result.finished, deployment_id=deployment.id, after_step=i + 1,
            clipboard=clipboard if ok else None, label=state, text=run.text)
        self._emit("step.ok" if ok else "step.failed", deployment, step=step.name, index=i + 1,
                   total=total, seconds=result.seconds, error=error)
        return result

    async def _await_hosts(self, run: _Run, wait: Wait, timeout: float
                           ) -> tuple[bool, str | None, bool]:
        """(ok, error, cancelled): hold until every target reached ``wait.until``, one
        failed, the timeout passed, or this run was stopped. Woken by the targets' events."""
        what = wait.describe()
        targets = await self._wait_targets(run.deployment, wait)
        if not targets:
            where = f" in {run.deployment.cluster}" if run.deployment.cluster else ""
            return False, f"nothing to wait for: no host {wait.target}{where}", False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waker = asyncio.Event()
        key = run.deployment.cluster
        self._wakers[key].add(waker)
        stop = [asyncio.ensure_future(run.cancel.wait()), asyncio.ensure_future(run.drain.wait())]
        remaining = list(targets)
        try:
            while True:
                waker.clear()
                pending = []
                for target in remaining:
                    reached, failure, where = await self._target_state(target, wait)
                    if failure:
                        return False, (f"gave up waiting for {what}: {target.hostname} "
                                       f"{failure}"), False
                    if not reached:
                        pending.append((target, where))
                remaining = [target for target, _ in pending]
                if not remaining:
                    return True, None, False
                left = deadline - loop.time()
                if left <= 0:
                    shown = "; ".join(f"{t.hostname} {where}" for t, where in pending[:5])
                    more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
                    return False, (f"timed out after {timeout:g}s waiting for {what}: "
                                   f"{shown}{more}"), False
                woke = asyncio.ensure_future(waker.wait())
                await asyncio.wait([woke, *stop], timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
                woke.cancel()
                if run.stopping:
                    return False, f"cancelled while waiting for {what}", True
        finally:
            for future in stop:
                future.cancel()
            self._wakers[key].discard(waker)
            if not self._wakers[key]:
                del self._wakers[key]

    async def _wait_targets(self, deployment: Deployment, wait: Wait) -> list[_Target]:
        """The deployments a wait is about: within its cluster run, or (outside a cluster)
        the latest deployment of the host, or of every host with the role."""
        labels = {"hostname": wait.host} if wait.host is not None else {"role": str(wait.role)}
        if deployment.cluster is None and wait.host is not None:
            latest = await self.store.latest(wait.host)
            members = [latest] if latest else []
        else:
            members = await self.store.matching(labels, deployment.cluster)
        return [_Target(d.id, d.hostname) for d in members if d.id != deployment.id]

    async def _target_state(self, target: _Target, wait: Wait) -> tuple[bool, str | None, str]:
        """(reached, failure, where it is) of one target: from memory while this engine
        drives it, else from the store."""
        run = self.running.get(target.hostname)
        if run is not None and run.deployment.id == target.id:
            d = run.deployment
            if d.state == "ready" or (wait.until != "ready" and wait.until in run.reached):
                return True, None, ""
            if d.state in ("failed", "cancelled"):
                return False, _ended(d), ""
            if run.step_started is None and d.current_step == 0:
                return False, None, "(queued)"
            step = d.step_name(d.current_step) or "?"
            return False, None, f"(at step {d.current_step}/{len(d.steps)} {step})"
        d = await self.store.deployment(target.id)
        if d is None:
            return False, "is gone from the store", ""
        if d.state == "ready" or (wait.until != "ready"
                                  and await self.store.reached(d.id, wait.until)):
            return True, None, ""
        if d.state in ("failed", "cancelled"):
            return False, _ended(d), ""
        return False, None, f"({d.state}, not driven yet)"

    def _wake(self, deployment: Deployment) -> None:
        """Let the waits that may be about this deployment look again."""
        for key in {deployment.cluster, None}:
            for waker in self._wakers.get(key, ()):
                waker.set()

    async def _finish_cancelled(self, run: _Run, clipboard: dict[str, Any],
                                done: list[tuple[int, Step]], i: int) -> None:
        deployment = run.deployment
        error = f"cancelled at step {i + 1}/{len(deployment.steps)}"
        deployment.current_step = i + 1
        await self.store.update_deployment(deployment.id, state="cancelled", error=error,
                                           current_step=i + 1, finished_at=time.time())
        deployment.state, deployment.error = "cancelled", error
        self._wake(deployment)
        self._emit("deploy.cancelled", deployment, index=i + 1, total=len(deployment.steps))
        if deployment.rollback:
            await self._rollback(run, clipboard, done)

    async def _rollback(self, run: _Run, clipboard: dict[str, Any],
                        done: list[tuple[int, Step]]) -> None:
        deployment = run.deployment
        undone: list[dict[str, Any]] = []
        deployment.meta["rolled_back"] = undone
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
            # stored before it is announced, so a status asked on hearing it shows it
            await self.store.update_deployment(deployment.id, meta=deployment.meta)
            self._emit("undo.ok" if result.ok else "undo.failed", deployment, step=undo,
                       index=i + 1, seconds=result.seconds, error=error)
        if not undone:
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

    def _slot(self, step: str, provider: str | None) -> "_Slots":
        caps = [self._step_caps.get(step)]
        if provider and step.partition(":")[0] in self._provider_modules:
            caps.append(self._provider_caps.get(provider))
        return _Slots(self, step, [cap for cap in caps if cap is not None])

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
    """Hold the step's own cap, its provider's cap, then the global slot, counting what
    is in flight. Every holder takes them in that order, so none waits in a cycle."""

    def __init__(self, engine: Engine, step: str, caps: list[asyncio.Semaphore]) -> None:
        self.engine = engine
        self.step = step
        self.caps = caps
        self.held: list[asyncio.Semaphore] = []

    async def __aenter__(self) -> None:
        try:
            for cap in [*self.caps, self.engine._global]:
                await cap.acquire()
                self.held.append(cap)
        except BaseException:
            self._release()
            raise
        self.engine.in_flight[self.step] += 1

    async def __aexit__(self, *_: Any) -> None:
        self.engine.in_flight[self.step] -= 1
        self._release()

    def _release(self) -> None:
        while self.held:
            self.held.pop().release()


def _ended(d: Deployment) -> str:
    """How a deployment that will not get further ended, for a waiter's message."""
    step = d.step_name(d.current_step)
    where = f" at step {d.current_step}/{len(d.steps)} {step}" if step else ""
    reason = f": {d.error}" if d.error and d.state == "failed" else ""
    return f"{'FAILED' if d.state == 'failed' else d.state}{where}{reason}"


def _counts(deployments: list[Deployment]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in deployments:
        out[d.state] = out.get(d.state, 0) + 1
    return out
