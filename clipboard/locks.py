"""Host locks (hubot-deploy's ``lock``): an operator holds a host, and no deployment of
it starts (deploy, retry, or a cluster that includes it) until someone unlocks it.

A lock does not stop a deployment already running, nor one a restart resumes: it
is about what starts next. The locks live in the store, so they outlast jarvis;
this registry keeps them in memory as well, because the engine checks them
synchronously when it takes a host, and only this process writes them.
"""
from __future__ import annotations

import time

from clipboard.errors import JarvisError
from clipboard.store import Lock, Store


class HostLocked(JarvisError):
    """A deployment of a locked host was asked for."""


class Locks:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.held: dict[str, Lock] = {}

    async def load(self) -> None:
        self.held = {lock.hostname: lock for lock in await self.store.locks()}

    async def take(self, hostname: str, owner: str, reason: str) -> tuple[Lock, bool]:
        """Lock ``hostname``: the lock, and False when someone held it already."""
        if hostname in self.held:
            return self.held[hostname], False
        lock = self.held[hostname] = await self.store.add_lock(hostname, owner, reason)
        return lock, True

    async def release(self, hostname: str) -> Lock | None:
        """Unlock ``hostname``; the lock it had, or None."""
        if self.held.pop(hostname, None) is None:
            return None
        return await self.store.remove_lock(hostname)

    def check(self, *hostnames: str) -> None:
        """Raise HostLocked naming every locked host among ``hostnames``, who holds it and why."""
        locked = [self.held[h] for h in hostnames if h in self.held]
        if not locked:
            return
        if len(hostnames) == 1:
            raise HostLocked(f"{describe(locked[0])}; unlock {locked[0].hostname} first")
        shown = "; ".join(describe(lock) for lock in locked[:5])
        more = f"; and {len(locked) - 5} more" if len(locked) > 5 else ""
        raise HostLocked(f"{shown}{more}; nothing was started")


def describe(lock: Lock) -> str:
    """``loki is locked by console:alice since 2026-11-22 03:40 UTC: kernel by hand``."""
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(lock.created_at))
    reason = f": {lock.reason}" if lock.reason else ""
    return f"{lock.hostname} is locked by {lock.owner} since {since}{reason}"
