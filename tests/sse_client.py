"""A Server-Sent Events client over aiohttp, for the tests and ``bench/http_api.py``.

    async with aiohttp.ClientSession() as session:
        async with open_stream(session, f"{base}/api/v1/events?host=web1") as stream:
            frame = await stream.next()          # Frame(id, kind, data)

    # event-to-receipt latency of N watchers (the bench: 100 watchers, p99 ≤ 50 ms)
    async with watchers(f"{base}/api/v1/events", 100) as crowd:
        ... start deployments ...
        seconds = await crowd.latencies(count=events_expected_per_watcher)

A stream counts as open once the server's first comment arrived: jarvis subscribes
before it answers, so every event after that reaches it. Latency is the receipt
time minus the event's ``at`` (when the engine told it), on the same clock.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Frame:
    id: int
    kind: str
    data: dict[str, Any]
    received: float = 0.0


@dataclass
class Stream:
    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)

    async def next(self, timeout: float = 15) -> Frame:
        """The next event; TimeoutError when none comes, EOFError when the server closed."""
        async with asyncio.timeout(timeout):
            fields: dict[str, str] = {}
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the server closed the stream")
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    return Frame(int(fields["id"]), fields.get("event", "message"),
                                 json.loads(fields["data"]), time.time())

    async def opened(self, timeout: float = 15) -> None:
        """Wait for the server's first comment: subscribed from here on."""
        async with asyncio.timeout(timeout):
            while not self.comments:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the server closed the stream")
                if raw.startswith(b":"):
                    self.comments.append(raw.decode()[1:].strip())

    async def until(self, kind: str, timeout: float = 30) -> list[Frame]:
        """Every frame up to and including the first of ``kind``."""
        frames = []
        async with asyncio.timeout(timeout):
            while True:
                frames.append(await self.next(timeout))
                if frames[-1].kind == kind:
                    return frames


@contextlib.asynccontextmanager
async def open_stream(session: aiohttp.ClientSession, url: str,
                      last_event_id: int | None = None,
                      headers: dict[str, str] | None = None) -> AsyncIterator[Stream]:
    sent = dict(headers or {})
    if last_event_id is not None:
        sent["Last-Event-ID"] = str(last_event_id)
    async with session.get(url, headers=sent, timeout=aiohttp.ClientTimeout(
            total=None, sock_read=None)) as response:
        if response.status != 200:
            raise AssertionError(f"GET {url}: {response.status} {await response.text()}")
        stream = Stream(response)
        await stream.opened()
        yield stream


@dataclass
class Crowd:
    streams: list[Stream]

    async def latencies(self, count: int, timeout: float = 60) -> list[float]:
        """Read ``count`` events on every stream; each receipt's delay after the event."""
        async def read(stream: Stream) -> list[float]:
            frames = [await stream.next(timeout) for _ in range(count)]
            return [frame.received - float(frame.data["at"]) for frame in frames]
        results = await asyncio.gather(*(read(stream) for stream in self.streams))
        return [delay for one in results for delay in one]


@contextlib.asynccontextmanager
async def watchers(url: str, count: int) -> AsyncIterator[Crowd]:
    """``count`` open streams on ``url`` (each its own connection)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session, \
            contextlib.AsyncExitStack() as stack:
        streams = await asyncio.gather(*(stack.enter_async_context(open_stream(session, url))
                                         for _ in range(count)))
        yield Crowd(list(streams))
