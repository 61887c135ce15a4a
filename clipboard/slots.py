"""How many steps run at once, across every deployment: bounded three ways (the
global cap, each step's own cap, each provider's cap on its provider steps), as
mcollective's runall bounds a fleet, so a provider API or a puppet master is
not swamped. ``wait:host`` and undos take no slot: a wait would hold one while
doing nothing, and an undo must not queue behind the work it cleans up after."""
from __future__ import annotations

import asyncio
from collections import defaultdict

from clipboard.config import Config


class Slots:
    def __init__(self, config: Config) -> None:
        settings = config.runner
        self._global = asyncio.Semaphore(settings.max_concurrent_steps)
        self._step_caps: dict[str, asyncio.Semaphore] = {
            name: asyncio.Semaphore(limit) for name, limit in settings.step_limits.items() if limit}
        self._provider_caps: dict[str, asyncio.Semaphore] = {
            name.lower(): asyncio.Semaphore(limit)
            for name, limit in settings.provider_limits.items() if limit}
        self._provider_modules = set(settings.provider_modules)
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.waiting: defaultdict[str, int] = defaultdict(int)  # for a slot, by step (metrics)

    def slot(self, step: str, provider: str | None) -> _Held:
        """``async with slots.slot(step, provider):`` runs the step within every cap."""
        caps = [self._step_caps.get(step)]
        if provider and step.partition(":")[0] in self._provider_modules:
            caps.append(self._provider_caps.get(provider))
        return _Held(self, step, [cap for cap in caps if cap is not None] + [self._global])


class _Held:
    """Hold the step's own cap, its provider's cap, then the global slot, counting what
    is in flight. Every holder takes them in that order, so none waits in a cycle."""

    def __init__(self, slots: Slots, step: str, caps: list[asyncio.Semaphore]) -> None:
        self.slots = slots
        self.step = step
        self.caps = caps
        self.held: list[asyncio.Semaphore] = []

    async def __aenter__(self) -> None:
        self.slots.waiting[self.step] += 1
        try:
            for cap in self.caps:
                await cap.acquire()
                self.held.append(cap)
        except BaseException:
            self._release()
            raise
        finally:
            self.slots.waiting[self.step] -= 1
        self.slots.in_flight[self.step] += 1

    async def __aexit__(self, *_: object) -> None:
        self.slots.in_flight[self.step] -= 1
        self._release()

    def _release(self) -> None:
        while self.held:
            self.held.pop().release()
