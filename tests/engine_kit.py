"""The real ``Engine`` over a real SQLite ``Store`` in a temporary directory, driving
steps through ``tests.fake_runner.FakeRunner``: the engine's rules without a fork
server or a worker process (the fast tier, ``pytest -m "not servers"``)."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from clipboard import config as config_mod
from clipboard.engine import Engine
from clipboard.owner import Owner
from clipboard.records import Deployment, Event, EventKind
from clipboard.run import Source
from clipboard.store import Store
from tests.fake_runner import FakeRunner

T = TypeVar("T")
SOURCE = Source("test design", "file")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    """Run one test's coroutine on a fresh loop, bounded so a wrong wait fails fast."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def design(hostname: str, **instance: Any) -> dict[str, Any]:
    return {"instance": {"hostname": hostname, **instance}}


@dataclass
class Kit:
    engine: Engine
    store: Store
    runner: FakeRunner
    events: list[Event] = field(default_factory=list)

    async def deploy(self, hostname: str, pipeline: str | None = None, *,
                     requester: str = "alice", force: bool = False,
                     account: str | None = None, **instance: Any) -> Deployment:
        plan = self.engine.plan(design(hostname, **instance), pipeline, force=force)
        return await self.engine.deploy(plan, SOURCE, requester=requester, account=account)

    async def finish(self, hostname: str) -> Deployment:
        """Wait for the host's run in this engine to end; its stored deployment."""
        current = self.engine.running.get(hostname)
        if current is not None and current.task is not None:
            await current.task
        latest = await self.store.latest(hostname)
        assert latest is not None
        return latest

    def kinds(self, hostname: str | None = None) -> list[EventKind]:
        return [e.kind for e in self.events
                if hostname is None or e.deployment.hostname == hostname]


def write_config(tmp: Path, pipelines: dict[str, Any], **sections: Any) -> config_mod.Config:
    data: dict[str, Any] = {"store": {"path": str(tmp / "jarvis.db")}, "pipelines": pipelines}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return config_mod.load(path, export=False)


@contextlib.asynccontextmanager
async def kit(tmp: Path, pipelines: dict[str, Any], fake: FakeRunner | None = None,
              **sections: Any) -> AsyncIterator[Kit]:
    """An engine with ``pipelines`` (the default pipeline is ``deploy``) and the
    configuration ``sections`` (``runner={...}``), stopped on exit."""
    config = write_config(tmp, pipelines, **sections)
    store = Store(config.get("store.path"))
    await store.open()
    fake = fake or FakeRunner()
    events: list[Event] = []
    engine = Engine(config, store, fake, Owner.this_process("test"), events.append)
    try:
        yield Kit(engine, store, fake, events)
    finally:
        await engine.stop()
        await store.close()
