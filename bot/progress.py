"""Progress of clusters in chat: aggregated, rate-limited, and always a final line.

A 20-host cluster would otherwise say a line per host per event. Instead each
cluster run gets one tracker that knows every host's state (from the engine's
events, and from the store for hosts it has not heard of, after a restart or a
retry) and says at most one line per ``clusters.announce_interval``:

    shop#1: 7/20 ready, 12 running, 1 failed — web7 FAILED at ssh:wait: timeout 120s

When no host of the run is queued or running any more, the final summary goes
out at once, whatever the rate. A failed undo is still announced on its own: it
leaves something behind that a person has to clean up.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot import report
from clipboard.records import ACTIVE, Deployment, Event, EventKind
from clipboard.store import Store

log = logging.getLogger(__name__)

HOST_EVENTS = (EventKind.ACCEPTED, EventKind.RESUMED, EventKind.RETRIED, EventKind.READY,
               EventKind.DECOMMISSIONED, EventKind.FAILED, EventKind.CANCELLED,
               EventKind.ROLLED_BACK, EventKind.ROLLBACK_FAILED, EventKind.STEP_STARTED)
Say = Callable[[dict[str, Any], list[str]], None]


@dataclass
class _Tracker:
    cluster: str
    reply_to: dict[str, Any] | None
    hosts: dict[str, Deployment] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)  # failures not yet announced
    loaded: bool = False
    partial: bool = False  # the store could not be read: hosts no event told of are missing
    dirty: bool = False  # a host finished (or came back) since the last line
    last_sent: float = 0.0
    timer: asyncio.TimerHandle | None = None
    load: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.loaded and bool(self.hosts) and not any(
            d.state in ACTIVE for d in self.hosts.values())


class ClusterProgress:
    def __init__(self, store: Store, say: Say, interval: float) -> None:
        self.store = store
        self.say = say
        self.interval = interval
        self.trackers: dict[str, _Tracker] = {}

    def event(self, event: Event) -> None:
        """Take one engine event of a cluster host."""
        d = event.deployment
        cluster = d.cluster
        assert cluster is not None
        if event.kind == EventKind.UNDO_FAILED:
            line = report.event_line(event, verbose=False)
            if line and d.reply_to:
                self.say(d.reply_to, [line])
            return
        if event.kind not in HOST_EVENTS:
            return
        tracker = self.trackers.get(cluster)
        if tracker is None:
            tracker = self.trackers[cluster] = _Tracker(cluster, d.reply_to)
            tracker.load = asyncio.get_running_loop().create_task(self._load(tracker))
        if d.reply_to:
            tracker.reply_to = d.reply_to
        tracker.hosts[d.hostname] = d  # the engine's own object: its state stays current
        if event.kind in (EventKind.ACCEPTED, EventKind.RETRIED, EventKind.STEP_STARTED):
            return  # a host starting or moving on is not worth a line
        if event.kind == EventKind.FAILED:
            tracker.fresh.append(report.failure_text(d))
        tracker.dirty = True
        self._consider(tracker)

    def following(self) -> frozenset[str]:
        """The cluster runs whose every host is known here, with its current state."""
        return frozenset(name for name, tracker in self.trackers.items()
                         if tracker.loaded and not tracker.partial)

    def hosts(self, cluster: str) -> list[Deployment] | None:
        """The latest deployment of each host of a run ``following`` names; None once
        the run has finished (the store has it all then)."""
        if cluster not in self.following():
            return None
        return list(self.trackers[cluster].hosts.values())

    async def _load(self, tracker: _Tracker) -> None:
        """Learn the hosts no event told about (finished before a restart, not retried)."""
        try:
            for d in await self.store.by_cluster(tracker.cluster):
                tracker.hosts.setdefault(d.hostname, d)
        except Exception:
            log.exception("cannot read cluster %s from the store", tracker.cluster)
            tracker.partial = True
        tracker.loaded = True
        self._consider(tracker)

    def _consider(self, tracker: _Tracker) -> None:
        if not tracker.loaded:
            return
        if tracker.finished:
            self._flush(tracker, final=True)
            return
        if not tracker.dirty:
            return
        wait = tracker.last_sent + self.interval - time.monotonic()
        if wait <= 0:
            self._flush(tracker)
        elif tracker.timer is None:
            tracker.timer = asyncio.get_running_loop().call_later(wait, self._flush, tracker)

    def _flush(self, tracker: _Tracker, final: bool = False) -> None:
        if tracker.timer is not None:
            tracker.timer.cancel()
            tracker.timer = None
        hosts = list(tracker.hosts.values())
        if final:
            line = report.summary_line(tracker.cluster, hosts, inline=5)
            del self.trackers[tracker.cluster]
        else:
            line = f"{tracker.cluster}: {report.counts_text(hosts)}"
            if tracker.fresh:
                more = len(tracker.fresh) - 3
                line += " — " + "; ".join(tracker.fresh[:3]) + (
                    f"; and {more} more" if more > 0 else "")
        tracker.fresh = []
        tracker.dirty = False
        tracker.last_sent = time.monotonic()
        if tracker.reply_to:
            self.say(tracker.reply_to, [line])
        log.info("%s", line)

    def close(self) -> None:
        for tracker in self.trackers.values():
            if tracker.timer is not None:
                tracker.timer.cancel()
            if tracker.load is not None:
                tracker.load.cancel()
        self.trackers.clear()
