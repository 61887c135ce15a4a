"""``GET /api/v1/events``: the event log as Server-Sent Events, live and resumable.

Filters (each optional): ``host``, ``cluster`` (``shop`` = every run, ``shop#2`` one),
``deployment`` (an id), ``kind`` (a prefix by dots: ``step`` takes ``step.*``). Each
frame is ``id: <id>\\nevent: <kind>\\ndata: <event JSON>\\n\\n``.

Resuming: with ``Last-Event-ID`` (what a browser's EventSource sends by itself on
reconnecting; it wins over ``?after=<id>``, which a first connection may give), the
events after that id are replayed from the store, then the stream goes live. To
leave no gap and send nothing twice, the stream subscribes to the live events
first, replays second, and then drops every live event whose id it already sent.
Without either, the stream starts with what happens next.

A client that reads slowly never slows jarvis: live events wait in a queue of at
most ``http.stream_queue`` per client, and a client that falls that far behind is
disconnected; it reconnects with ``Last-Event-ID`` and loses nothing. A comment
line every ``http.heartbeat`` seconds keeps proxies from closing an idle stream.
"""
from __future__ import annotations

import asyncio
import functools
import logging

from aiohttp import web

from bot.http.requests import check_read, context, is_number
from clipboard.errors import JarvisError, NotFound
from clipboard.eventlog import EventLog, Subscription
from clipboard.store_events import EventFilter, StoredEvent

log = logging.getLogger(__name__)

REPLAY_PAGE = 500
STREAMS: web.AppKey[set[Subscription]] = web.AppKey("event_streams", set)


@functools.lru_cache(maxsize=1024)
def frame(event: StoredEvent) -> bytes:
    """The SSE frame of ``event``, made once however many streams send it."""
    return f"id: {event.id}\nevent: {event.kind}\ndata: {event.data}\n\n".encode()


def _number(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    if value.startswith("-") and is_number(value[1:]):
        raise JarvisError(f"{what} must not be negative")
    if not is_number(value):
        raise JarvisError(f"{what} must be an event id (a whole number), not {value[:40]!r}")
    return int(value)


def filter_of(request: web.Request) -> EventFilter:
    """The query's filters; 400 for a deployment that is no number."""
    query = request.query
    return EventFilter(host=query.get("host") or None, cluster=query.get("cluster") or None,
                       deployment=_number(query.get("deployment"), "deployment"),
                       kind=query.get("kind") or None)


def resume_point(request: web.Request) -> int | None:
    """Where to replay from: ``Last-Event-ID``, else ``?after=``; None: live only."""
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        return _number(header.strip(), "Last-Event-ID")
    return _number(request.query.get("after"), "after")


def event_log(request: web.Request) -> EventLog:
    found = context(request).events
    if found is None:
        raise NotFound("the event stream is off in this process (it does not drive "
                       "deployments)")
    return found


async def stream(request: web.Request) -> web.StreamResponse:
    check_read(request)
    wanted = filter_of(request)
    after = resume_point(request)
    events = event_log(request)
    config = context(request).config
    heartbeat = config.http.heartbeat
    subscription = events.subscribe(wanted, config.http.stream_queue)
    live_from = events.published  # every later event reaches the subscription
    request.app[STREAMS].add(subscription)
    try:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        try:
            await response.write(b": jarvis events\n\n")
            sent = after if after is not None else 0
            if after is not None:
                sent = await _replay(request, response, wanted, after)
                if sent < after:
                    # A resume point beyond this log's end (a client of another store):
                    # live from the moment it asked, including what was stored meanwhile.
                    sent = min(sent, live_from)
            await _live(response, subscription, sent, heartbeat)
        except ConnectionResetError:
            log.debug("an event stream's client went away")
        return response
    finally:
        events.unsubscribe(subscription)
        request.app[STREAMS].discard(subscription)


async def _replay(request: web.Request, response: web.StreamResponse, wanted: EventFilter,
                  after: int) -> int:
    """Send the stored events after ``after``; the id the stream is done with."""
    store = context(request).store
    sent = after
    while True:
        found, done = await store.events_after(sent, wanted, REPLAY_PAGE)
        if found:
            await response.write(b"".join(frame(event) for event in found))
        sent = done
        if len(found) < REPLAY_PAGE:
            return sent


async def _live(response: web.StreamResponse, subscription: Subscription, sent: int,
                heartbeat: float) -> None:
    """Send what the subscription hears after ``sent``, a comment every ``heartbeat``
    seconds, until it closes. One timer per heartbeat, none per event: with a hundred
    streams, each event costs each only a wake-up and a write."""
    loop = asyncio.get_running_loop()
    timer = loop.call_later(heartbeat, subscription.pulse)
    try:
        while True:
            await subscription.ready.wait()
            events = [event for event in subscription.take() if event.id > sent]
            if events:
                await response.write(b"".join(frame(event) for event in events))
                sent = events[-1].id
            if subscription.closed:
                if subscription.overflowed:
                    log.info("an event stream fell %d events behind; disconnected (it "
                             "resumes with Last-Event-ID)", subscription.limit)
                return
            if subscription.beat:
                subscription.beat = False
                await response.write(b": heartbeat\n\n")
                timer = loop.call_later(heartbeat, subscription.pulse)
    finally:
        timer.cancel()


async def _end_streams(app: web.Application) -> None:
    """On shutdown: end every stream now rather than after the server's grace period."""
    streams = app[STREAMS]
    for subscription in list(streams):
        subscription.close()


def add_routes(app: web.Application) -> None:
    streams: set[Subscription] = set()
    app[STREAMS] = streams
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/api/v1/events", stream)
