"""What the IRC and XMPP adapters share: the outgoing queue, its rate limiter,
line splitting, and the secrets in their settings.

Why a queue of our own rather than writing to the socket: a network that is
away must not lose lines (they wait here, in order, and go out after the
reconnect), a burst of 200 progress lines must leave at a pace the server
accepts (a token bucket) instead of piling up in the server's input buffer
where it gets the bot killed or delays every later answer by a minute, and one
noisy target must not starve another (targets take turns, lines of one target
stay in order).

Fairness between people (jarvis issue 12): lines come in two priority classes.
Announcements (what a deployment says: progress, completion) go before answers,
so a flood of answers never delays a deployment's last line by more than one
line. Not strictly before: while both wait, one answer line goes after every
``ANNOUNCE_RUN`` announcement lines, so a verbose deployment's 200 progress lines
do not hold a person's ``status`` for 80 seconds either. Within a class the queues are kept per
*owner* — the identity whose command an answer is for, or the target for lines
nobody owns (announcements, and callers that name no owner) — and owners take
turns line by line, so one person asking for 60 clipboards delays another's
``status`` by one line per turn, not by 3,000. ``cap`` bounds how many lines one
owner may have waiting: the rest of an answer is dropped with one line saying so.
The token bucket is the outbox's own, not the connection's, so the pace holds
across reconnects.
"""
from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from clipboard.errors import ConfigError
from clipboard.secret import ENV_SUFFIX, Secret

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

    def full(self) -> bool:
        """Whether the bucket has refilled completely (its history no longer matters)."""
        self._refill()
        return self._tokens >= self.burst


Transmit = Callable[[str, str], None]


class Priority(enum.IntEnum):
    """Lower goes first: a deployment's lines never wait behind answers."""

    ANNOUNCE = 0
    ANSWER = 1


# Announcement lines sent in a row, while answers wait, before one answer line goes.
ANNOUNCE_RUN = 2


class _Line(NamedTuple):
    target: str
    text: str
    notice: bool = False  # the "lines dropped" notice: one in a row is enough


class _Class:
    """One priority class: a queue per owner, and the order in which owners take turns."""

    def __init__(self) -> None:
        self.queues: dict[str, collections.deque[_Line]] = {}
        self.turns: collections.deque[str] = collections.deque()

    def queue(self, owner: str) -> collections.deque[_Line]:
        queue = self.queues.get(owner)
        if queue is None:
            queue = self.queues[owner] = collections.deque()
            self.turns.append(owner)
        return queue

    def sent(self, owner: str) -> None:
        """The head line of ``owner`` went out: pass the turn on."""
        queue = self.queues[owner]
        queue.popleft()
        self.turns.rotate(-1)
        if not queue:
            del self.queues[owner]
            self.turns.remove(owner)

    @property
    def pending(self) -> int:
        return sum(len(queue) for queue in self.queues.values())


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
        self._classes = {priority: _Class() for priority in sorted(Priority)}
        self._announced = 0  # announcement lines sent since the last answer line
        self._online = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    @property
    def pending(self) -> int:
        return sum(cls.pending for cls in self._classes.values())

    def waiting(self, owner: str, priority: Priority = Priority.ANSWER) -> int:
        """How many lines of ``owner`` are not sent yet."""
        return len(self._classes[priority].queues.get(owner, ()))

    def queued(self, owner: str, priority: Priority = Priority.ANSWER) -> list[str]:
        """The lines of ``owner`` not sent yet, in order."""
        return [line.text for line in self._classes[priority].queues.get(owner, ())]

    def put(self, target: str, lines: list[str], *, owner: str | None = None,
            priority: Priority = Priority.ANSWER, cap: int | None = None, lead: str = "") -> None:
        """Queue ``lines`` for ``target`` as ``owner``'s (default: the target's own queue).

        With ``cap``, the owner may have at most that many lines waiting: the lines
        beyond go, and one notice (``lead`` + how many went) takes their place.
        Beyond ``limit`` lines in all, the oldest lines of this owner go.
        """
        if not lines:
            return
        queue = self._classes[priority].queue(owner if owner is not None else target)
        if cap is not None and len(queue) + len(lines) > cap:
            queue.extend(self._capped(queue, target, lines, cap, lead))
        else:
            queue.extend(_Line(target, line) for line in lines)
        overflow = self.pending - self.limit
        if overflow > 0:
            for _ in range(min(overflow, len(queue) - 1)):
                queue.popleft()
                self.dropped += 1
            log.warning("%s: outgoing queue over %d lines; dropped the oldest for %s (%d dropped so far)",
                        self.name, self.limit, target, self.dropped)
        self._wake.set()

    def _capped(self, queue: collections.deque[_Line], target: str, lines: list[str], cap: int,
                lead: str) -> list[_Line]:
        """What of ``lines`` fits under ``cap``, then a notice for the rest; none when the
        owner's last waiting line already is one (a flood earns one notice, not many)."""
        room = max(cap - len(queue) - 1, 0)
        dropped = len(lines) - room
        self.dropped += dropped
        log.info("%s: %d lines for %s over the cap of %d waiting lines; dropped", self.name,
                 dropped, target, cap)
        kept = [_Line(target, line) for line in lines[:room]]
        if kept or not (queue and queue[-1].notice):
            plural = "s" if dropped != 1 else ""
            kept.append(_Line(target, f"{lead}[{dropped} more line{plural} dropped: {cap} lines of "
                                      "yours are already waiting to go out]", notice=True))
        return kept

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

    def _next(self) -> tuple[Priority, str] | None:
        """The class and owner whose head line goes next: the first class with a line
        for a ready target (answers first after a run of announcements); in it, the
        next owner in turn (held owners keep their turn)."""
        order = sorted(Priority, reverse=self._announced >= ANNOUNCE_RUN)
        for priority in order:
            cls = self._classes[priority]
            for _ in range(len(cls.turns)):
                owner = cls.turns[0]
                if self._ready(cls.queues[owner][0].target):
                    return priority, owner
                cls.turns.rotate(-1)
        return None

    async def _run(self) -> None:
        bursting = False
        while True:
            chosen = self._next() if self._online else None
            delay = self.bucket.delay() if chosen is not None else 0.0
            if (chosen is None or delay > 0) and bursting:
                self._bursting(False)
                bursting = False
            if chosen is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if not bursting:
                self._bursting(True)
                bursting = True
            priority, owner = chosen
            cls = self._classes[priority]
            line = cls.queues[owner][0]
            try:
                self._transmit(line.target, line.text)
            except Exception as exc:  # noqa: BLE001 - the connection went away: keep the line, wait
                log.info("%s: sending to %s failed (%s); holding %d lines until reconnect",
                         self.name, line.target, exc, self.pending)
                self.offline()
                continue
            self.bucket.take()
            cls.sent(owner)
            self._announced = self._announced + 1 if priority is Priority.ANNOUNCE else 0


def setting_secret(settings: dict[str, Any], key: str, where: str) -> str | None:
    """``settings[key]`` or the environment variable named by ``settings[key + '_env']``.

    None when neither is set (the secret is optional); a clear error when the
    named variable is empty. The value itself never appears in a message.
    """
    value, env_name = settings.get(key), settings.get(key + ENV_SUFFIX)
    return Secret(f"{where}.{key}", None if value in (None, "") else str(value),
                  str(env_name) if env_name else None).get()
