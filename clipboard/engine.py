"""Deployments: a design handed through a pipeline, step by step, every hand-over stored.

The engine is what operators' commands reach: it plans (validates) designs,
starts deployments of hosts and clusters, cancels and retries them, and takes
up deployments whose owner is gone. Driving one is ``clipboard.drive``'s job,
the caps are ``clipboard.slots``', the waits between hosts ``clipboard.waits``',
holding the hosts and the lease on their deployments ``clipboard.lease``'.
It reports through ``Event`` objects (named after Salt Cloud's provisioning
events) to one callback; it knows nothing of chat.

A cluster is many deployments under one cluster id (``shop#1``), started
together after every host validated. Cancelling a cluster drains it: no new
step starts, running ones finish.

``deploy … force`` takes two people (``clipboard.approval`` says why every force
waits): the deployment is recorded ``awaiting approval`` and owned by nobody —
so no process, restarted or not, drives it — until ``approve`` by another
identity within ``acl.approval_window`` seconds queues it under this process and
starts it; ``cancel`` ends the wait, and the lease keeper marks waits that ran
out ``approval expired``. A cluster cannot be forced as a whole: one approval
would cover hosts nobody looked at.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from clipboard import cluster as cluster_mod
from clipboard import needs as needs_mod
from clipboard import pipeline as pipeline_mod
from clipboard.approval import Approval, clock
from clipboard.config import Config
from clipboard.drive import Driver
from clipboard.errors import DesignError, HostBusy, JarvisError
from clipboard.lease import Lease
from clipboard.owner import Owner
from clipboard.records import ACTIVE, STOPPED, UNDONE, Deployment, Event, EventKind, State
from clipboard.run import Plan, Run, Source
from clipboard.runner import Runner
from clipboard.store import Store
from clipboard.validate import hostname_of, normalize_design

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, config: Config, store: Store, runner: Runner, owner: Owner,
                 notify: Callable[[Event], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.owner = owner
        self.running: dict[str, Run] = {}
        self.driver = Driver(config, store, runner, self.running,
                             notify or (lambda event: None))
        self.lease = Lease(config, store, owner, self.running, self.driver)
        self.approval_window = float(config.get("acl.approval_window"))
        self._keeper: asyncio.Task[None] | None = None

    @property
    def lease_seconds(self) -> float:
        return self.lease.seconds

    @property
    def in_flight(self) -> dict[str, int]:
        """Steps running now, by step name."""
        return self.driver.slots.in_flight

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, *, adopt: bool) -> None:
        """Keep the lease of what this process drives; with ``adopt``, take up every
        deployment whose owner is gone, now and at each renewal."""
        if adopt:
            await self.lease.adopt_orphans()
        self._keeper = asyncio.create_task(self.lease.keep(adopt, self.expire_approvals),
                                           name="lease-keeper")

    async def stop(self) -> None:
        """Stop driving deployments without changing their state, and let them go, so
        the next process to start takes them up at once."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        tasks = [run.task for run in self.running.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.release(self.owner)

    # -- commands ------------------------------------------------------------------------
    def plan(self, design: dict[str, Any], pipeline_name: str | None = None, *,
             force: bool = False) -> Plan:
        """Validate a design and choose its pipeline; raises before anything runs.

        The clipboard gets the operator's side, ``jarvis:`` — the pipeline, ``force``,
        who asked, the deployment's id — which only the engine writes: a design may
        not hold that key, and workers read operator intent only there."""
        clipboard = normalize_design(design, self.runner.tasks, self.config)
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
        problems = needs_mod.missing(clipboard, [s.name for s in chosen.steps], self.runner.tasks,
                                     chosen.name)
        if problems:
            raise DesignError(f"{hostname}: " + "; ".join(problems))
        clipboard["jarvis"] = {"deployment": None, "pipeline": chosen.name, "force": force,
                               "requested_by": None}
        return Plan(hostname, chosen, clipboard)

    def plan_cluster(self, design: dict[str, Any], pipeline_name: str | None = None, *,
                     force: bool = False) -> cluster_mod.ClusterPlan:
        """Expand and validate every host of a cluster design; raises before anything runs."""
        if force:
            raise JarvisError("a cluster is not forced as a whole: one approval would cover "
                              "hosts nobody looked at; deploy each host that needs force alone")
        return cluster_mod.plan(design, self.config, functools.partial(self.plan, force=force),
                                pipeline_name, tasks=self.runner.tasks)

    def busy(self, hostname: str) -> Run | None:
        return self.running.get(hostname)

    async def deploy(self, plan: Plan, source: Source, *, requester: str | None = None,
                     reply_to: dict[str, Any] | None = None,
                     account: str | None = None) -> Deployment:
        """Record the deployment and start it in the background; refuses a busy or
        locked host (the store decides, against every process). A forced one is only
        recorded, awaiting approval (``account``: the requester's verified services
        account, so a second nick of the same person cannot approve it)."""
        self.lease.check_running(plan.hostname)
        if plan.clipboard["jarvis"]["force"]:
            return await self._hold(plan, source, requester or "someone", reply_to, account)
        run = self._placeholder(plan)
        with self.lease.reserved([run]):
            run.deployment = await self.store.create_deployment(
                **self._spec(plan, source, requester, reply_to), owner=self.owner,
                lease_until=self.lease.until())
        self.driver.emit(EventKind.ACCEPTED, run.deployment)
        self.driver.launch(run, plan.clipboard, 0)
        return run.deployment

    async def deploy_cluster(self, plan: cluster_mod.ClusterPlan, source: Source, *,
                             requester: str | None = None,
                             reply_to: dict[str, Any] | None = None
                             ) -> tuple[str, list[Deployment]]:
        """Record every host under one new cluster id, then start them all (launch order:
        hosts that wait on nobody first). Refuses the whole cluster if any host is busy
        or locked."""
        self.lease.check_running(*(h.hostname for h in plan.hosts), what=f"cluster {plan.name}: ")
        runs = [self._placeholder(h.plan) for h in plan.hosts]
        with self.lease.reserved(runs):
            cluster_id, deployments = await self.store.create_cluster(
                plan.name, [self._spec(h.plan, source, requester, reply_to) for h in plan.hosts],
                owner=self.owner, lease_until=self.lease.until())
        for run, deployment in zip(runs, deployments):
            run.deployment = deployment
            self.driver.emit(EventKind.ACCEPTED, deployment)
        for host, run in zip(plan.hosts, runs):
            self.driver.launch(run, host.plan.clipboard, 0)
        return cluster_id, deployments

    async def _hold(self, plan: Plan, source: Source, requester: str,
                    reply_to: dict[str, Any] | None, account: str | None) -> Deployment:
        """Record a forced deployment awaiting approval, owned and driven by nobody."""
        spec = self._spec(plan, source, requester, reply_to)
        spec["meta"]["approval"] = Approval(requester, time.time() + self.approval_window,
                                            account).to_meta()
        deployment = await self.store.create_deployment(**spec,
                                                        state=State.AWAITING_APPROVAL)
        log.info("deployment #%d of %s forced by %s awaits approval", deployment.id,
                 deployment.hostname, requester)
        return deployment

    async def approve(self, hostname: str, *, by: str, account: str | None = None
                      ) -> Deployment:
        """Start the host's forced deployment on a second person's word, within its
        window. Refuses the requester, a host with nothing waiting, a wait that ran out."""
        self.lease.check_running(hostname)
        waiting = await self.store.active_of(hostname)
        if waiting is None or waiting.state != State.AWAITING_APPROVAL:
            latest = waiting or await self.store.latest(hostname)
            if latest is not None and latest.state == State.APPROVAL_EXPIRED:
                raise JarvisError(f"{hostname}: the approval of deployment #{latest.id} "
                                  "expired; deploy it again with force")
            raise JarvisError(f"{hostname}: no deployment awaits approval")
        approval = Approval.of(waiting.meta)
        assert approval is not None, "a deployment awaiting approval records who asked"
        if approval.same_person(by, account):
            raise JarvisError(f"{hostname}: {by} asked for the force of deployment "
                              f"#{waiting.id} and cannot approve it too; someone else must")
        if approval.expired():
            await self.expire_approvals()
            raise JarvisError(f"{hostname}: the approval of deployment #{waiting.id} expired "
                              f"at {clock(approval.until)}; deploy it again with force")
        approval.approved_by, approval.approved_at = by, time.time()
        waiting.meta["approval"] = approval.to_meta()
        clipboard = await self.store.clipboard(waiting.id, 0)
        assert clipboard is not None
        clipboard["jarvis"].update(approved_by=by, approved_at=approval.approved_at)
        run = Run(waiting)
        with self.lease.reserved([run]):
            if not await self.store.approve(waiting, owner=self.owner, lease_until=self.lease.until(),
                                            clipboard=clipboard):
                raise JarvisError(f"{hostname}: deployment #{waiting.id} stopped waiting just "
                                  "now (approved, cancelled or expired); see status")
        log.info("deployment #%d of %s forced by %s, approved by %s", waiting.id, hostname,
                 approval.requested_by, by)
        self.driver.emit(EventKind.APPROVED, waiting)
        self.driver.launch(run, clipboard, 0)
        return waiting

    async def expire_approvals(self) -> list[Deployment]:
        """Mark the waits whose window passed ``approval expired``, and say so."""
        expired = await self.store.expire_approvals()
        for deployment in expired:
            log.info("deployment #%d of %s: approval expired", deployment.id,
                     deployment.hostname)
            self.driver.emit(EventKind.APPROVAL_EXPIRED, deployment)
        return expired

    async def cancel(self, hostname: str, *, by: str | None = None
                     ) -> tuple[Deployment, Owner | None]:
        """Cancel the host's active deployment: here when this process drives it, else
        by asking its owner (returned) to, at its next renewal. One awaiting approval
        ends at once, having run nothing."""
        run = self.running.get(hostname)
        if run is None:
            active = await self.store.active_of(hostname)
            if active is None:
                raise JarvisError(f"{hostname}: nothing is running")
            if active.state == State.AWAITING_APPROVAL:
                active.meta["cancelled_by"] = by or "someone"
                if not await self.store.end_wait(active, State.CANCELLED, None):
                    raise JarvisError(f"{hostname}: deployment #{active.id} stopped waiting "
                                      "just now; cancel it again")
                return active, None
            self._refuse_rolling_back(active)
            if active.owner is not None and not active.owner.gone(active.lease_until,
                                                                  time.time()):
                await self.store.request_cancel(active.id, by or "someone")
                return active, active.owner
            run = Run(active)  # its owner is gone: take it up, stopped at once
            with self.lease.reserved([run]):
                if not await self.store.claim(active, self.owner, self.lease.until()):
                    raise HostBusy(f"{hostname}: another process took deployment "
                                   f"#{active.id} up just now; cancel it again")
                run.stop(by)
                await self.lease.resume(run)
            return active, None
        self._refuse_rolling_back(run.deployment)
        run.stop(by)
        return run.deployment, None

    @staticmethod
    def _refuse_rolling_back(deployment: Deployment) -> None:
        if deployment.state == State.ROLLING_BACK:
            raise JarvisError(f"{deployment.hostname}: deployment #{deployment.id} is rolling "
                              "back; its undos run to the end")

    async def cancel_cluster(self, cluster: str) -> list[Deployment]:
        """Drain a cluster: no host starts another step; running steps finish, then each
        host ends cancelled (its completed steps undone when its pipeline rolls back)."""
        runs = [run for run in self.running.values() if run.deployment.cluster == cluster]
        if not runs:
            elsewhere = [d for d in await self.store.by_cluster(cluster) if d.state in ACTIVE]
            if elsewhere:
                raise JarvisError(f"{cluster}: driven by another process ("
                                  f"{elsewhere[0].driver()}); cancel it there")
            raise JarvisError(f"{cluster}: no host of it is running")
        for run in runs:
            run.drain.set()
        return [run.deployment for run in runs]

    async def retry(self, hostname: str, *, requester: str | None = None,
                    reply_to: dict[str, Any] | None = None) -> Deployment:
        """Run a stopped deployment again: from the step that failed, or — when its
        steps were rolled back — from step 1 with the clipboard it first started from
        (the design as fetched then, not fetched again). A forced one is retried from
        the failed step under its approval, never from step 1 (see the refusal)."""
        self.lease.check_running(hostname)
        deployment = await self.store.latest(hostname)
        if deployment is None:
            raise JarvisError(f"{hostname}: never deployed")
        if deployment.state in ACTIVE:
            raise HostBusy(f"{hostname} is being deployed by {deployment.driver()}")
        if deployment.state not in STOPPED:
            raise JarvisError(f"{hostname}: deployment #{deployment.id} is {deployment.state}; "
                              "only a failed, cancelled or rolled back one can be retried")
        approval = Approval.of(deployment.meta)
        if approval is not None and approval.approved_by is None:
            raise JarvisError(f"{hostname}: deployment #{deployment.id} was forced and never "
                              "approved, so it never ran; deploy it again with force")
        if approval is not None and deployment.state in UNDONE:
            # from step 1 means a new run on a fresh node: it takes a new force and approval
            raise JarvisError(f"{hostname}: deployment #{deployment.id} was forced and rolled "
                              "back; deploy it again with force (and a new approval)")
        self.lease.check_running(hostname)  # again: another command may have come in while we read
        run = Run(deployment)
        with self.lease.reserved([run]):
            clipboard, start = await self._prepare_retry(run, requester, reply_to)
            await self.store.reactivate([deployment], owner=self.owner,
                                        lease_until=self.lease.until())
        self._retried(run, start)
        self.driver.launch(run, clipboard, start)
        return deployment

    async def retry_cluster(self, cluster: str, *, requester: str | None = None,
                            reply_to: dict[str, Any] | None = None) -> list[Deployment]:
        """Retry the stopped hosts of a cluster run, and only them: from the step that
        failed, or from the start for a host whose steps were rolled back. Every one is
        taken and marked running before any starts, so their waits see each other
        coming back instead of failing on a stale state."""
        members = await self.store.by_cluster(cluster)
        failed = [d for d in members if d.state in STOPPED]
        if not failed:
            counts: dict[str, int] = {}
            for d in members:
                counts[d.state] = counts.get(d.state, 0) + 1
            shown = ", ".join(f"{n} {state}" for state, n in counts.items())
            raise JarvisError(f"{cluster}: no failed host to retry ({shown or 'no hosts'})")
        self.lease.check_running(*(d.hostname for d in failed), what=f"{cluster}: ")
        runs = [Run(d) for d in failed]
        with self.lease.reserved(runs):
            prepared = [(run, *await self._prepare_retry(run, requester, reply_to))
                        for run in runs]
            await self.store.reactivate(failed, owner=self.owner, lease_until=self.lease.until(),
                                        what=f"{cluster}: ")
        for run, _clipboard, start in prepared:
            self._retried(run, start)
        for run, clipboard, start in prepared:
            self.driver.launch(run, clipboard, start)
        return failed

    async def _prepare_retry(self, run: Run, requester: str | None,
                             reply_to: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        """The clipboard and step a retry restarts at, with the deployment made ready to
        run again in memory (the caller stores it): the attempt that ended is kept in
        ``meta.attempts`` for ``history``."""
        d = run.deployment
        after_rollback = d.state in UNDONE
        if after_rollback:
            start, clipboard = 0, await self.store.initial_clipboard(d.id)
        else:
            start, clipboard = max(d.current_step - 1, 0), await self.store.clipboard(d.id)
        assert clipboard is not None
        d.meta.setdefault("attempts", []).append({
            "attempt": d.attempt, "ended": str(d.state), "error": d.error,
            "rolled_back": d.meta.pop("rolled_back", None),
            "cancelled_by": d.meta.pop("cancelled_by", None),
            "retried_by": requester, "at": time.time(), "from_step": start + 1,
            "after_rollback": after_rollback})
        d.meta.pop("rollback", None)
        if reply_to is not None:
            d.reply_to = reply_to
        d.attempt += 1
        d.state, d.error, d.finished_at, d.current_step = State.RUNNING, None, None, start + 1
        return clipboard, start

    def _retried(self, run: Run, start: int) -> None:
        self.driver.waits.wake(run.deployment)
        self.driver.emit(EventKind.RETRIED, run.deployment, index=start + 1,
                         total=len(run.deployment.steps))

    # -- internals -----------------------------------------------------------------------
    def _placeholder(self, plan: Plan) -> Run:
        run = Run(Deployment(0, plan.hostname, "", plan.pipeline.name, (), State.QUEUED,
                             time.time(), owner=self.owner))
        return run

    def _spec(self, plan: Plan, source: Source, requester: str | None,
              reply_to: dict[str, Any] | None) -> dict[str, Any]:
        labels = cluster_mod.labels_of(plan.clipboard, self.driver.redact_keys)
        if "provider" not in labels and self.config.providers.default:
            labels["provider"] = self.config.providers.default.lower()
        meta: dict[str, Any] = {"labels": labels}
        if plan.pipeline.ends_as != State.READY:
            meta["ends_as"] = str(plan.pipeline.ends_as)
        plan.clipboard["jarvis"]["requested_by"] = requester
        plan.clipboard["jarvis"]["requested_at"] = round(time.time(), 3)  # notify's duration
        return {"hostname": plan.hostname, "source": source.source,
                "source_kind": source.kind, "source_sha256": source.sha256,
                "fetched_at": source.fetched_at, "pipeline": plan.pipeline.name,
                "steps": plan.pipeline.steps,
                "rollback": plan.pipeline.rollback, "clipboard": plan.clipboard,
                "requester": requester, "reply_to": reply_to, "meta": meta}
