"""The event log: every engine event stored in order, scrubbed, then told to whoever
listens in this process (the SSE streams, the webhook deliveries).

The engine tells its events through a synchronous callback (``clipboard.drive``'s
``emit``) that must not wait for anything. ``record`` turns the event into its JSON
right then (the deployment object changes afterwards), scrubs it, and queues it;
one task appends what is queued to the store, in order, through the store's writer
thread (``clipboard.store_events``), and only then publishes it: a listener is
never told of an event the store does not have, so a watcher that disconnects
resumes from the store with ``Last-Event-ID`` and misses nothing.

Other processes sharing the store (``jarvis deploy``) append to the same log. What
is published here is always the log in id order with no gap: when this process's
new ids do not follow the last one published, the rows between (another
process's) are read from the store and published first; and while anyone listens,
the store is looked at every ``POLL`` seconds for rows another process added.

Scrubbing: the drive already scrubs a step's error of the deployment's secrets;
here every text is scrubbed again of the configuration's secrets, and an error of
those the drive knows the deployment has held, so no path into the log skips it.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from clipboard import redact
from clipboard.config import Config
from clipboard.records import Event
from clipboard.store import Store
from clipboard.store_events import EventFilter, NewEvent, StoredEvent, with_id

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks for another process's events, while someone listens
PAGE = 500
CLOSE_WAIT = 10.0  # seconds a stop waits for the queued events to be written


def shape(event: Event, at: float) -> dict[str, Any]:
    """The HTTP contract's event (without its id). ``index`` is the step's number as
    chat, ``/steps`` and the clipboards count it (1 = the first step)."""
    d = event.deployment
    return {"at": round(at, 3), "kind": str(event.kind), "hostname": d.hostname,
            "cluster": d.cluster, "deployment": d.id, "state": str(d.state),
            "step": event.step, "index": event.index, "total": event.total,
            "seconds": None if event.seconds is None else round(event.seconds, 3),
            "error": event.error}


class Subscription:
    """One listener's queue of published events, bounded: a listener that falls
    ``limit`` events behind is dropped (``overflowed``) rather than slowing anyone."""

    def __init__(self, wanted: EventFilter, limit: int) -> None:
        self.wanted = wanted
        self.limit = limit
        self.items: deque[StoredEvent] = deque()
        self.ready = asyncio.Event()
        self.overflowed = False
        self.closed = False
        self.beat = False  # a heartbeat is due (``pulse``)

    def offer(self, event: StoredEvent) -> None:
        if self.closed or not self.wanted.matches(event):
            return
        if len(self.items) >= self.limit:
            self.overflowed = self.closed = True
            self.items.clear()
        else:
            self.items.append(event)
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def pulse(self) -> None:
        """Wake the listener with no event: time for its heartbeat."""
        self.beat = True
        self.ready.set()

    def take(self) -> list[StoredEvent]:
        """What came since the last take (empty once closed)."""
        taken = list(self.items)
        self.items.clear()
        if not self.closed:
            self.ready.clear()
        return taken


class EventLog:
    def __init__(self, config: Config, store: Store,
                 secrets_of: Callable[[int], Iterable[str]] = lambda _id: ()) -> None:
        self.store = store
        self.kept = config.http.events_kept
        self.scrubber = redact.Scrubber(config.secrets)
        self.secrets_of = secrets_of
        self.subscriptions: set[Subscription] = set()
        self.wakers: list[Callable[[], None]] = []
        self.published = 0  # the newest id told to listeners
        self._pending: list[NewEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- the engine's side ---------------------------------------------------------------
    def wrap(self, tell: Callable[[Event], None]) -> Callable[[Event], None]:
        """The engine's callback: record the event, then ``tell`` it (chat)."""
        def notify(event: Event) -> None:
            try:
                self.record(event)
            except Exception:
                log.exception("cannot record the event %s", event.kind)
            tell(event)
        return notify

    def record(self, event: Event) -> None:
        """Queue ``event`` for the store (synchronous: the engine does not wait)."""
        if self._closing:
            log.warning("event %s of #%d after the log closed: not recorded", event.kind,
                        event.deployment.id)
            return
        data = self._scrubbed(shape(event, time.time()), event.deployment.id)
        self._pending.append(NewEvent(data["at"], data["kind"], data["hostname"],
                                      data["cluster"], data["deployment"], data["step"],
                                      json.dumps(data)))
        self._wake.set()

    def _scrubbed(self, data: dict[str, Any], deployment_id: int) -> dict[str, Any]:
        out = {key: self.scrubber.scrub(value) if isinstance(value, str) and key != "kind"
               else value for key, value in data.items()}
        if out["error"]:
            held = set(self.secrets_of(deployment_id))
            if held:
                out["error"] = redact.Scrubber(held).scrub(out["error"])
        return out

    # -- listeners -----------------------------------------------------------------------
    def subscribe(self, wanted: EventFilter, limit: int) -> Subscription:
        """Hear every event ``wanted`` takes that is published from now on."""
        subscription = Subscription(wanted, limit)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def on_publish(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (no arguments, must not block) each time events are published."""
        self.wakers.append(wake)

    def _publish(self, events: list[StoredEvent]) -> None:
        for event in events:
            if event.id <= self.published:
                continue
            self.published = event.id
            for subscription in list(self.subscriptions):
                subscription.offer(event)
        if events:
            for wake in self.wakers:
                wake()

    # -- the task that writes and publishes ---------------------------------------------
    async def start(self) -> None:
        self.published = await self.store.last_event_id()
        self._task = asyncio.create_task(self._run(), name="event-log")

    async def close(self) -> None:
        """Write what is queued, then stop; every subscription ends."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_WAIT)
            except TimeoutError:
                self._task.cancel()
                log.error("the event log could not be written for %gs; %d events are lost",
                          CLOSE_WAIT, len(self._pending))
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for subscription in list(self.subscriptions):
            subscription.close()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL)
            self._wake.clear()
            try:
                if self._pending:
                    await self._append()
                elif self.subscriptions or self.wakers:
                    await self._catch_up()
            except Exception:
                log.exception("the event log could not be written; retrying in %gs", POLL)
                await asyncio.sleep(POLL)
                self._wake.set()
            if self._closing and not self._pending:
                return

    async def _append(self) -> None:
        batch, self._pending = self._pending, []
        try:
            ids = await self.store.append_events(batch, self.kept)
        except BaseException:
            self._pending[:0] = batch  # kept, in order, for the next try
            raise
        if ids[0] != self.published + 1:
            await self._catch_up(ids[0] - 1)
        self._publish([StoredEvent(i, e.kind, e.hostname, e.cluster, e.deployment_id,
                                   with_id(i, e.json)) for i, e in zip(ids, batch, strict=True)])

    async def _catch_up(self, upto: int | None = None) -> None:
        """Publish what other processes appended after the last id published."""
        while True:
            found, done = await self.store.events_after(self.published, limit=PAGE)
            found = [e for e in found if upto is None or e.id <= upto]
            self._publish(found)
            if len(found) < PAGE or (upto is not None and self.published >= upto):
                if upto is None:
                    self.published = max(self.published, done)
                return
