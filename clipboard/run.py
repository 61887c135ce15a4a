"""A deployment in memory while this process drives it, and what starts one.

``Plan`` is a validated design with its pipeline (what a dry run shows and
``deploy`` records); ``Source`` says where the design came from; ``Run`` is the
driving process's side of one deployment: the events that stop it and what
other hosts' waits look at.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from clipboard.pipeline import Pipeline
from clipboard.records import Deployment


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
class Run:
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

    def stop(self, by: str | None) -> None:
        """Cancel: kill the running step and start no other (``by`` is who asked)."""
        if by is not None:
            self.deployment.meta["cancelled_by"] = by
        self.cancel.set()
        if not self.killed.done():
            self.killed.set_result(None)
