"""Webhook watches (Noah's idea): every event a watch's filter takes is POSTed to its
URL, signed, in order, retried until the receiver takes it — across restarts.

A watch is configured (``http.watches``: name → url, secret or secret_env, and the
host/cluster/kind filters) or registered over HTTP (``bot.http.watches``); both
are rows of the store's ``watches`` table with a cursor: the last event id the
watch is done with. Each watch has one delivery loop reading the event log after
its cursor (``clipboard.store_events``), so delivery is strictly in id order (and
so in order per host), and a restart resumes at the cursor: an event that
happened while the receiver was down, or while jarvis was stopped, is still
delivered. The cursor advances only once the receiver answered 2xx; any other
answer, a timeout or a refused connection is tried again after
``http.watch_backoff`` seconds, doubling up to ``http.watch_max_backoff``, for as
long as it takes: no event is skipped. Delivery is at least once (a stop between
the answer and the cursor's write sends that event again); receivers deduplicate
by ``X-Jarvis-Event-Id``.

The body is the event's JSON (the SSE ``data:``), signed as ``notify:webhook``
signs (``workers.notify.signature``: ``X-Jarvis-Signature: sha256=<hex
HMAC-SHA256 of the body>``). A configured watch's secret is read from the
configuration when it starts; a registered one's is kept in the store (it must
be, to sign) and never shown: ``describe`` leaves it out, and a URL's credentials
are masked.

Only a process that adopts (``jarvis run``, the bot) delivers, so a ``jarvis
deploy`` sharing the store sends nothing twice; its events reach the log and the
bot's loops deliver them.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from clipboard import redact
from clipboard.config import Config
from clipboard.errors import ConfigError, JarvisError, NotFound
from clipboard.eventlog import POLL, EventLog
from clipboard.store import Store
from clipboard.store_events import EventFilter, StoredEvent, WatchRow
from workers.notify import SIGNATURE_HEADER, signature

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Jarvis-Event-Id"
PAGE = 100


def check_url(url: str, where: str) -> str:
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ConfigError(f"{where} must be an http:// or https:// URL")
    return url


@dataclass
class Watch:
    """A watch being delivered: its row, its secret, its loop and what it did."""

    row: WatchRow
    secret: str
    cursor: int
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> dict[str, Any]:
        """What GET /api/v1/watches answers: never the secret."""
        return {"id": self.row.id, "name": self.row.name, "origin": self.row.origin,
                "url": redact.shown_url(self.row.url), **self.row.filter.describe(),
                "cursor": self.cursor, "delivered": self.delivered, "failed": self.failed,
                "last_error": self.last_error}


class Webhooks:
    """Every watch's delivery loop. ``counts()`` is (delivered, failed) POSTs since start,
    what ``/metrics`` reports."""

    def __init__(self, config: Config, store: Store, events: EventLog) -> None:
        self.config = config
        self.store = store
        self.events = events
        self.timeout = config.http.watch_timeout
        self.backoff = config.http.watch_backoff
        self.max_backoff = config.http.watch_max_backoff
        self.watches: dict[int, Watch] = {}
        self.delivered = 0
        self.failed = 0
        self._session: aiohttp.ClientSession | None = None

    def configured(self) -> dict[str, tuple[str, EventFilter]]:
        """``http.watches`` as name → (url, filter); ConfigError naming a bad entry."""
        found = {}
        for name, entry in self.config.http.watches.items():
            url = check_url(entry.url or "", f"http.watches.{name}.url")
            entry.secret.require()  # ConfigError now, not at the first event
            found[name] = (url, EventFilter(entry.host, entry.cluster, None, entry.kind))
        return found

    async def start(self) -> None:
        configured = self.configured()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "jarvis", "Content-Type": "application/json"})
        self.events.on_publish(self._wake_all)
        for row in await self.store.sync_watches(configured):
            self._run(row)
        if self.watches:
            log.info("webhook watches: %s", ", ".join(w.row.name for w in self.watches.values()))

    async def close(self) -> None:
        for watch in list(self.watches.values()):
            await self._stop(watch)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def counts(self) -> tuple[int, int]:
        """(delivered, failed): POSTs answered 2xx, and those that were not (each retry
        counts), since this process started."""
        return self.delivered, self.failed

    # -- what the API asks ---------------------------------------------------------------
    def describe_all(self) -> list[dict[str, Any]]:
        return [w.describe() for w in sorted(self.watches.values(), key=lambda w: w.row.id)]

    def get(self, watch_id: int) -> dict[str, Any]:
        return self._watch(watch_id).describe()

    async def add(self, name: str, url: str, secret: str, wanted: EventFilter, by: str,
                  after: int | None = None) -> dict[str, Any]:
        """Register a watch from now (or after event id ``after``) and start delivering."""
        if not name or len(name) > 100:
            raise JarvisError("a watch needs a name (at most 100 characters)")
        check_url(url, "url")
        if not secret:
            raise JarvisError("a watch needs a secret: every POST is signed with it")
        row = await self.store.add_watch(name, origin=by, url=url, secret=secret,
                                         wanted=wanted, after=after)
        log.info("%s registered the watch %s (%s)", by, name, redact.shown_url(url))
        return self._run(row).describe()

    async def remove(self, watch_id: int) -> dict[str, Any]:
        watch = self._watch(watch_id)
        if watch.row.origin == "config":
            raise JarvisError(f"the watch {watch.row.name} is configured in http.watches; "
                              "remove it there")
        await self._stop(watch)
        await self.store.remove_watch(watch_id)
        log.info("the watch %s was deleted", watch.row.name)
        return watch.describe()

    def _watch(self, watch_id: int) -> Watch:
        watch = self.watches.get(watch_id)
        if watch is None:
            raise NotFound(f"no watch {watch_id}")
        return watch

    # -- delivery ------------------------------------------------------------------------
    def _run(self, row: WatchRow) -> Watch:
        secret = row.secret if row.secret is not None else \
            self.config.http.watches[row.name].secret.require()
        watch = Watch(row, secret, row.cursor)
        watch.task = asyncio.create_task(self._deliver(watch), name=f"watch-{row.name}")
        self.watches[row.id] = watch
        return watch

    async def _stop(self, watch: Watch) -> None:
        self.watches.pop(watch.row.id, None)
        if watch.task is not None:
            watch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch.task

    def _wake_all(self) -> None:
        for watch in self.watches.values():
            watch.wake.set()

    async def _deliver(self, watch: Watch) -> None:
        while True:
            watch.wake.clear()
            try:
                more = await self._deliver_page(watch)
            except Exception:  # the store, or a bug: never the end of the watch
                log.exception("watch %s: delivery stopped at event %d; trying again",
                              watch.row.name, watch.cursor)
                more = False
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.wake.wait(), POLL)

    async def _deliver_page(self, watch: Watch) -> bool:
        """Deliver the next page of events after the cursor; whether there may be more."""
        found, done = await self.store.events_after(watch.cursor, watch.row.filter, PAGE)
        for event in found:
            await self._post(watch, event)
            await self._advance(watch, event.id)
        if done > watch.cursor:
            await self._advance(watch, done)
        return len(found) == PAGE

    async def _advance(self, watch: Watch, cursor: int) -> None:
        watch.cursor = cursor
        try:
            await self.store.watch_done(watch.row.id, cursor)
        except Exception:  # the next one written covers this one
            log.exception("watch %s: cannot store its cursor", watch.row.name)

    async def _post(self, watch: Watch, event: StoredEvent) -> None:
        """POST ``event`` until the receiver answers 2xx."""
        body = event.data.encode()
        headers = {SIGNATURE_HEADER: signature(watch.secret, body),
                   EVENT_ID_HEADER: str(event.id)}
        delay = self.backoff
        while True:
            error = await self._attempt(watch, body, headers)
            if error is None:
                self.delivered += 1
                watch.delivered += 1
                watch.last_error = None
                return
            self.failed += 1
            watch.failed += 1
            if watch.last_error != error:
                log.warning("watch %s: POST %s of event %d %s; trying again, backing off up "
                            "to %gs", watch.row.name, redact.shown_url(watch.row.url), event.id, error,
                            self.max_backoff)
            watch.last_error = error
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def _attempt(self, watch: Watch, body: bytes, headers: dict[str, str]) -> str | None:
        """None when the receiver took it, else what went wrong in a few words."""
        assert self._session is not None
        try:
            async with self._session.post(watch.row.url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"answered {response.status} {response.reason or ''}".strip()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__
