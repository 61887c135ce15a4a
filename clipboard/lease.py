"""Ownership: which hosts this process holds, and its lease on their deployments.

Every deployment this process starts or takes up is recorded in the store as
owned by this process (``clipboard.owner``), under a lease renewed every third
of ``store.lease_seconds``. The store refuses a second active deployment of a
host, whichever process asks; ``running`` is only this process's own view, a
quick refusal before the store is asked. At each renewal
this process also applies cancels other processes asked for, lets go of any
deployment another process took over (its lease ran out), and — when it is the
long-running kind (``adopt``) — takes up deployments whose owner is gone.

Holding starts in memory: ``reserved`` takes a host in ``running`` before the
first await, so a second command in this process is refused at once, and gives
it back when recording the deployment fails. ``clipboard.engine`` decides what
to hold; this module keeps holding it, and takes up what others let fall.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from clipboard.config import Config
from clipboard.drive import Driver
from clipboard.errors import HostBusy
from clipboard.owner import Owner
from clipboard.records import ACTIVE, EventKind, State
from clipboard.run import Run
from clipboard.store import Store

log = logging.getLogger(__name__)


class Lease:
    """This process's hold on the deployments it drives (``running``, shared with the
    engine and the driver), kept alive in the store by renewal."""

    def __init__(self, config: Config, store: Store, owner: Owner,
                 running: MutableMapping[str, Run], driver: Driver) -> None:
        self.store = store
        self.owner = owner
        self.running = running
        self.driver = driver
        self.seconds = config.store.lease_seconds

    def until(self) -> float:
        """When a lease taken now runs out."""
        return time.time() + self.seconds

    async def keep(self, adopt: bool, expire_approvals: Callable[[], Awaitable[Any]]) -> None:
        """Renew every third of the lease, for as long as the process runs; a failed
        renewal is logged and tried again, since the next one may well work."""
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                await self.renew()
                await expire_approvals()
                if adopt:
                    await self.adopt_orphans()
            except Exception:
                log.exception("renewing the lease on this process's deployments failed")

    async def renew(self) -> None:
        """Extend the lease, apply cancels other processes asked for, and stop driving
        what another process took over (ours ran out while we were stalled)."""
        ours = {run.deployment.id: run for run in self.running.values() if run.deployment.id}
        owned, cancels = await self.store.renew(self.owner, self.until())
        for deployment_id, run in ours.items():
            if deployment_id in cancels and not run.cancel.is_set():
                log.info("cancel of #%d asked by %s from another process", deployment_id,
                         cancels[deployment_id])
                run.stop(cancels[deployment_id])
            if deployment_id in owned or run.deployment.state not in ACTIVE:
                continue
            found = await self.store.deployment(deployment_id)
            if found and found.state in ACTIVE and found.owner and found.owner != self.owner:
                log.error("deployment #%d of %s was taken over by %s; no longer driving it",
                          deployment_id, found.hostname, found.owner.describe())
                if run.task is not None:
                    run.task.cancel()

    async def adopt_orphans(self) -> None:
        """Take up every active deployment whose owner is gone; one another process
        claims first is simply left to it."""
        now = time.time()
        for deployment in await self.store.active():
            owner = deployment.owner
            if deployment.hostname in self.running or (owner is not None and (
                    owner == self.owner or not owner.gone(deployment.lease_until, now))):
                continue
            run = Run(deployment)
            with self.reserved([run]):
                if not await self.store.claim(deployment, self.owner, self.until()):
                    raise _Lost()
                await self.resume(run)

    async def resume(self, run: Run) -> None:
        """Drive a claimed deployment on from where its last owner stopped: the step
        that was interrupted runs again, a rollback goes on with its next undo."""
        deployment = run.deployment
        await self.store.interrupted_steps(deployment.id)
        if deployment.state == State.ROLLING_BACK:
            clipboard = await self.store.clipboard(deployment.id)
            assert clipboard is not None
            done = len(deployment.meta.get("rolled_back") or [])
            log.info("taking up the rollback of deployment #%d of %s at undo %d",
                     deployment.id, deployment.hostname, done + 1)
            self.driver.emit(EventKind.RESUMED, deployment, index=deployment.current_step,
                             total=len(deployment.steps))
            self.driver.launch_rollback(run, clipboard)
            return
        start = max(deployment.current_step - 1, 0)
        clipboard = (await self.store.clipboard(deployment.id, start)
                     or await self.store.clipboard(deployment.id))
        assert clipboard is not None
        log.info("taking up deployment #%d of %s at step %d", deployment.id,
                 deployment.hostname, start + 1)
        self.driver.emit(EventKind.RESUMED, deployment, index=start + 1,
                         total=len(deployment.steps))
        self.driver.launch(run, clipboard, start)

    def check_running(self, *hostnames: str, what: str = "") -> None:
        """HostBusy at once for a host this process drives (the store decides for the
        rest, but cannot say how far along one of ours is)."""
        busy = [self.running[h].deployment for h in hostnames if h in self.running]
        if not busy:
            return
        if len(hostnames) == 1:
            d = busy[0]
            ident = d.driver() if d.id else "(a deployment being recorded)"
            raise HostBusy(f"{d.hostname} is being deployed by {ident}; wait for it or "
                           f"cancel {d.hostname}")
        shown = ", ".join(d.hostname for d in busy[:10])
        more = f" and {len(busy) - 10} more" if len(busy) > 10 else ""
        raise HostBusy(f"{what}{shown}{more} already being deployed; nothing was started")

    @contextlib.contextmanager
    def reserved(self, runs: list[Run]) -> Iterator[None]:
        """Take the runs' hosts in memory before the first await (so a second command in
        this process is refused at once), and give them back if what follows fails."""
        for run in runs:
            self.running[run.deployment.hostname] = run
        try:
            yield
        except _Lost:
            self._unreserve(runs)
        except BaseException:
            self._unreserve(runs)
            raise

    def _unreserve(self, runs: list[Run]) -> None:
        for run in runs:
            if self.running.get(run.deployment.hostname) is run:
                del self.running[run.deployment.hostname]


class _Lost(Exception):
    """Another process claimed an orphan first: nothing to do, nothing to report."""
