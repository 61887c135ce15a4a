"""The built-in ``wait:host`` (Noah's ``noah_block``): a host holds at a step until
other hosts reach a step or the end of their pipeline.

The engine runs it without a worker process and without a step slot. It watches
the in-memory progress of the hosts this process drives (and the store for those
it does not), woken by their step and state events, not by polling; the store is
read again on each wake for hosts driven elsewhere, and at most every
``RECHECK`` seconds, since another process's progress sends no wake.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from clipboard.records import STOPPED, Deployment, State
from clipboard.run import Run
from clipboard.steps import Wait
from clipboard.store import Store

RECHECK = 5.0


@dataclass
class _Target:
    id: int
    hostname: str


class Waits:
    def __init__(self, store: Store, running: Mapping[str, Run]) -> None:
        self.store = store
        self.running = running
        self._wakers: defaultdict[str | None, set[asyncio.Event]] = defaultdict(set)

    def wake(self, deployment: Deployment) -> None:
        """Let the waits that may be about this deployment look again."""
        for key in {deployment.cluster, None}:
            for waker in self._wakers.get(key, ()):
                waker.set()

    async def hold(self, run: Run, wait: Wait, timeout: float) -> tuple[bool, str | None, bool]:
        """(ok, error, cancelled): hold until every target reached ``wait.until``, one
        failed, the timeout passed, or this run was stopped. Woken by the targets' events."""
        what = wait.describe()
        targets = await self._targets(run.deployment, wait)
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
                    reached, failure, where = await self._state(target, wait)
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
                elsewhere = any(self._driven_here(t) is None for t in remaining)
                woke = asyncio.ensure_future(waker.wait())
                await asyncio.wait([woke, *stop], timeout=min(left, RECHECK) if elsewhere
                                   else left, return_when=asyncio.FIRST_COMPLETED)
                woke.cancel()
                if run.stopping:
                    return False, f"cancelled while waiting for {what}", True
        finally:
            for future in stop:
                future.cancel()
            self._wakers[key].discard(waker)
            if not self._wakers[key]:
                del self._wakers[key]

    async def _targets(self, deployment: Deployment, wait: Wait) -> list[_Target]:
        """The deployments a wait is about: within its cluster run, or (outside a cluster)
        the latest deployment of the host, or of every host with the role."""
        labels = {"hostname": wait.host} if wait.host is not None else {"role": str(wait.role)}
        if deployment.cluster is None and wait.host is not None:
            latest = await self.store.latest(wait.host)
            members = [latest] if latest else []
        else:
            members = await self.store.matching(labels, deployment.cluster)
        return [_Target(d.id, d.hostname) for d in members if d.id != deployment.id]

    def _driven_here(self, target: _Target) -> Run | None:
        run = self.running.get(target.hostname)
        return run if run is not None and run.deployment.id == target.id else None

    async def _state(self, target: _Target, wait: Wait) -> tuple[bool, str | None, str]:
        """(reached, failure, where it is) of one target: from memory while this process
        drives it, else from the store."""
        run = self._driven_here(target)
        if run is not None:
            d = run.deployment
            if d.state == State.READY or (wait.until != State.READY and wait.until in run.reached):
                return True, None, ""
            if d.state not in (State.QUEUED, State.RUNNING):
                return False, ended(d), ""
            if run.step_started is None and d.current_step == 0:
                return False, None, "(queued)"
            step = d.step_name(d.current_step) or "?"
            return False, None, f"(at step {d.current_step}/{len(d.steps)} {step})"
        found = await self.store.deployment(target.id)
        if found is None:
            return False, "is gone from the store", ""
        if found.state == State.READY or (wait.until != State.READY and await self.store.reached(
                found.id, wait.until)):
            return True, None, ""
        if found.state not in (State.QUEUED, State.RUNNING):
            return False, ended(found), ""
        return False, None, f"({found.state}, driven by another process)"


def ended(d: Deployment) -> str:
    """How a deployment that will not get where a wait needs it ended, for the waiter."""
    step = d.step_name(d.current_step)
    where = f" at step {d.current_step}/{len(d.steps)} {step}" if step else ""
    if d.state == State.DECOMMISSIONED:
        return "was decommissioned"
    if d.state in STOPPED or d.state == State.ROLLING_BACK:
        reason = f": {d.error}" if d.error and d.state != State.CANCELLED else ""
        return f"{str(d.state).upper() if d.state == State.FAILED else d.state}{where}{reason}"
    return f"{d.state}{where}"
