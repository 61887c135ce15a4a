"""What the IRC and XMPP adapters share: the outgoing queue, its rate limiter,
line splitting, and the secrets in their settings.

Why a queue of our own rather than writing to the socket: a network that is
away must not lose lines (they wait here, in order, and go out after the
reconnect), a burst of 200 progress lines must leave at a pace the server
accepts (a token bucket) instead of piling up in the server's input buffer
where it gets the bot killed or delays every later answer by a minute, and one
noisy target must not starve another (targets take turns, lines of one target
stay in order).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import Any, Callable

from clipboard.errors import ConfigError

log = logging.getLogger(__name__)


def split_text(text: str, max_bytes: int) -> list[str]:
    """Lines of ``text``, each cut into pieces of at most ``max_bytes`` UTF-8 bytes.

    Cuts prefer the last space in the second half of a piece and never fall
    inside a multi-byte character. Empty lines and NUL/CR characters are dropped
    (IRC cannot carry them).
    """
    if max_bytes < 4:
        raise ValueError("max_bytes must leave room for one UTF-8 character")
    pieces: list[str] = []
    for line in text.replace("\0", "").splitlines():
        data = line.rstrip().encode("utf-8")
        while len(data) > max_bytes:
            cut = max_bytes
            while data[cut] & 0xC0 == 0x80:  # a continuation byte: back up to the character start
                cut -= 1
            space = data.rfind(b" ", max_bytes // 2, cut + 1)
            if space > 0:
                pieces.append(data[:space].decode("utf-8"))
                data = data[space + 1:]
            else:
                pieces.append(data[:cut].decode("utf-8"))
                data = data[cut:]
        if data.strip():
            pieces.append(data.decode("utf-8"))
    return pieces


def pack_lines(lines: list[str], max_bytes: int) -> list[str]:
    """Join consecutive lines with newlines into messages of at most ``max_bytes``.

    XMPP carries multi-line messages, so a long answer goes out as few stanzas
    as the size limit allows instead of one stanza per line.
    """
    messages: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode("utf-8"))
        if current and size + 1 + length > max_bytes:
            messages.append("\n".join(current))
            current, size = [], 0
        size += length + (1 if current else 0)
        current.append(line)
    if current:
        messages.append("\n".join(current))
    return messages


class TokenBucket:
    """``burst`` lines at once, then ``rate`` lines per second."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError(f"rate limit needs rate > 0 and burst >= 1 (got rate={rate}, burst={burst})")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until one line may go out (0 when it may go now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> None:
        self._refill()
        self._tokens -= 1


Transmit = Callable[[str, str], None]


class Outbox:
    """Ordered, rate-limited delivery that waits out disconnections.

    ``transmit(target, line)`` writes one line to the network; when it raises,
    the line stays first in its queue and the outbox goes offline until the
    adapter calls ``online()`` again. ``ready(target)`` lets the adapter hold
    lines for a channel or room it has not (re)joined yet. ``bursting(True)`` is
    called before the first of lines sent back to back and ``bursting(False)``
    after the last, so the adapter can have them leave in one write.
    """

    def __init__(self, name: str, transmit: Transmit, *, rate: float, burst: float,
                 limit: int = 10000, ready: Callable[[str], bool] | None = None,
                 bursting: Callable[[bool], None] | None = None) -> None:
        self.name = name
        self._transmit = transmit
        self._ready = ready or (lambda target: True)
        self._bursting = bursting or (lambda on: None)
        self.bucket = TokenBucket(rate, burst)
        self.limit = limit
        self._queues: dict[str, collections.deque[str]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self._online = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    @property
    def pending(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def put(self, target: str, lines: list[str]) -> None:
        """Queue ``lines`` for ``target``; beyond ``limit`` the oldest lines of that target go."""
        if not lines:
            return
        queue = self._queues.get(target)
        if queue is None:
            queue = self._queues[target] = collections.deque()
            self._turns.append(target)
        queue.extend(lines)
        overflow = self.pending - self.limit
        if overflow > 0:
            for _ in range(min(overflow, len(queue) - 1)):
                queue.popleft()
                self.dropped += 1
            log.warning("%s: outgoing queue over %d lines; dropped the oldest for %s (%d dropped so far)",
                        self.name, self.limit, target, self.dropped)
        self._wake.set()

    def online(self) -> None:
        self._online = True
        self._wake.set()

    def offline(self) -> None:
        self._online = False

    def wake(self) -> None:
        """Look again at held targets (one was just joined)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.name}-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _next_target(self) -> str | None:
        for _ in range(len(self._turns)):
            target = self._turns[0]
            if self._ready(target):
                return target
            self._turns.rotate(-1)
        return None

    async def _run(self) -> None:
        bursting = False
        while True:
            target = self._next_target() if self._online else None
            delay = self.bucket.delay() if target is not None else 0.0
            if (target is None or delay > 0) and bursting:
                self._bursting(False)
                bursting = False
            if target is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if not bursting:
                self._bursting(True)
                bursting = True
            queue = self._queues[target]
            try:
                self._transmit(target, queue[0])
            except Exception as exc:  # the connection went away under us: keep the line, wait
                log.info("%s: sending to %s failed (%s); holding %d lines until reconnect",
                         self.name, target, exc, self.pending)
                self.offline()
                continue
            self.bucket.take()
            queue.popleft()
            self._turns.rotate(-1)
            if not queue:
                del self._queues[target]
                self._turns.remove(target)


def setting_secret(settings: dict[str, Any], key: str, where: str) -> str | None:
    """``settings[key]`` or the environment variable named by ``settings[key + '_env']``.

    None when neither is set (the secret is optional); a clear error when the
    named variable is empty. The value itself never appears in a message.
    """
    value = settings.get(key)
    if value not in (None, ""):
        return str(value)
    env_name = settings.get(key + "_env")
    if not env_name:
        return None
    env_value = os.environ.get(str(env_name))
    if not env_value:
        raise ConfigError(f"{where}.{key}_env names the environment variable {env_name}, which is empty")
    return env_value
