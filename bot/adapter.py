"""The small interface between the bot core and one chat network.

An adapter turns what people say into ``Incoming`` messages and says what the
core asks it to. The core knows nothing of the network beyond the identity
string and the reply target, so a deployment started in IRC is answered from
Jabber just the same. ``send`` never blocks and never fails: when the network
is away the adapter keeps the line in order and delivers it after reconnecting.
"""
from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bot.outbox import Outbox, Priority

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """One line a person said to the bot.

    ``identity`` is what ACL rules match: IRC ``nick!user@host`` (``...`` plus
    ``account`` when services tell it), XMPP bare JID, ``console:<user>``.
    ``reply_to`` is the adapter's own target for answers (a channel, a room
    JID, a nick or a JID); ``room`` is the channel or room name, None in private.
    ``nick`` is how to address the speaker in a room.

    ``verified`` is False when the network could not tell who is speaking (a Jabber
    room that hides real JIDs from the bot: the identity is then only ``room/nick``,
    which anyone may take); ``unverified_reason`` says why and how to fix it, and
    ``bot.acl`` refuses privileged commands to such a speaker.

    ``local`` is True only for the user at this machine (the console, the CLI), set
    by those adapters and never from anything a network sent: the design sources
    let a local user read any file that user can, and chat only configured roots.
    """

    adapter: str
    identity: str
    text: str
    reply_to: str
    room: str | None = None
    nick: str | None = None
    account: str | None = None
    verified: bool = True
    unverified_reason: str | None = None
    local: bool = False

    def route(self) -> dict[str, Any] | None:
        """Where a deployment this line started reports to (kept with it, so a restarted
        bot still knows); None from HTTP, which has no chat target: its event stream
        tells what follows."""
        if not self.reply_to:
            return None
        return {"adapter": self.adapter, "target": self.reply_to, "nick": self.nick,
                "room": self.room}


# A coroutine, not any awaitable: the adapter hands it to create_task.
Deliver = Callable[[Incoming], Coroutine[Any, Any, None]]


class Adapter(abc.ABC):
    """One chat network. Subclasses are built with ``(settings, bot_name)``.

    ``shared`` networks are where many people talk to the bot at once (IRC,
    Jabber): there the core limits each identity's commands (``chat.fairness``),
    and the outbox caps each identity's waiting lines. The console is its
    operator's own, and a script piped into it may say a hundred commands in a row.
    """

    name: str = "adapter"
    shared: bool = False

    def __init__(self, settings: dict[str, Any], bot_name: str) -> None:
        self.settings = settings
        self.bot_name = bot_name

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Connect (in the background, with reconnects) and pass every message to ``deliver``."""

    @abc.abstractmethod
    def send(self, target: str, text: str) -> None:
        """Queue ``text`` (possibly several lines) for ``target``; delivered in order, rate-limited."""

    def answer(self, target: str, text: str, *, owner: str, cap: int | None = None,
               lead: str = "") -> None:
        """Queue an answer to ``owner``'s command; with ``cap``, at most that many of
        ``owner``'s lines wait (the rest is dropped, with one line starting ``lead``
        saying so). A network without a queue just sends it."""
        self.send(target, text)

    def announce(self, target: str, text: str) -> None:
        """Queue a deployment's line ahead of every answer."""
        self.send(target, text)

    def private_target(self, incoming: Incoming) -> str | None:
        """Where to answer the speaker of ``incoming`` privately; None when the
        network has no private channel to a room's occupant."""
        return None

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect and stop every background task."""


class ReconnectingAdapter(Adapter):
    """A network whose link a supervisor task of ours keeps up: connect, wait until
    the link is lost, connect again; after a failed attempt wait a delay that doubles
    from ``min_delay`` up to ``max_delay``. The chat libraries retry on their own terms
    (slixmpp for up to five minutes); ours alone decides, so a restarted server is
    back within seconds."""

    shared = True
    min_delay = 0.5
    max_delay = 5.0
    outbox: Outbox  # made by each adapter, with its network's rate and line limits

    def __init__(self, settings: dict[str, Any], bot_name: str) -> None:
        super().__init__(settings, bot_name)
        self.min_delay = float(settings.get("reconnect_min_delay") or self.min_delay)
        self.max_delay = float(settings.get("reconnect_max_delay") or self.max_delay)
        self.connect_timeout = float(settings.get("connect_timeout") or 10)
        self.reconnects = 0
        self.connected = asyncio.Event()  # logged in and joined: lines may go out
        self._lost: asyncio.Event | None = None  # set by the adapter when its link drops
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._deliver: Deliver | None = None

    @abc.abstractmethod
    def _lines(self, target: str, text: str) -> list[str]:
        """``text`` cut into what the network carries as one message each."""

    def send(self, target: str, text: str) -> None:
        self.outbox.put(target, self._lines(target, text))

    def answer(self, target: str, text: str, *, owner: str, cap: int | None = None,
               lead: str = "") -> None:
        self.outbox.put(target, self._lines(target, text), owner=owner, cap=cap, lead=lead)

    def announce(self, target: str, text: str) -> None:
        self.outbox.put(target, self._lines(target, text), priority=Priority.ANNOUNCE)

    @abc.abstractmethod
    def where(self) -> str:
        """The server (and account) for log lines."""

    @abc.abstractmethod
    async def _keepalive(self) -> None:
        """Notice a dead link that sent no FIN, and drop it (the supervisor reconnects)."""

    @abc.abstractmethod
    async def _connect_once(self) -> None:
        """Connect, log in and join; raise when any of it fails."""

    @abc.abstractmethod
    def _drop_connection(self) -> None:
        """Abandon a half-made or dead connection before the next attempt."""

    def _run_in_background(self) -> None:
        """The supervisor, the keepalive and the outbox, until ``_stop_background``."""
        loop = asyncio.get_running_loop()
        self.outbox.start()
        self._tasks = [loop.create_task(self._supervise(), name=f"{self.name}-supervisor"),
                       loop.create_task(self._keepalive(), name=f"{self.name}-keepalive")]

    async def _stop_background(self) -> None:
        self._stopping = True
        await cancel_all(self._tasks)
        self._tasks = []
        await self.outbox.stop()

    def _emit(self, incoming: Incoming) -> None:
        """Hand a message to the core without waiting for it; a failure is logged."""
        if self._deliver is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(incoming))
        task.add_done_callback(self._report_failure)

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: handling a message failed: %s", self.name, task.exception())

    async def _supervise(self) -> None:
        assert self._lost is not None, "start() creates the lost event first"
        delay = self.min_delay
        while not self._stopping:
            self._lost.clear()
            try:
                await self._connect_once()
            except Exception as exc:  # noqa: BLE001 - any failure to connect or log in: wait, retry
                log.warning("%s: cannot connect to %s: %s; retrying in %.1fs",
                            self.name, self.where(), exc or type(exc).__name__, delay)
                self._drop_connection()
                await asyncio.sleep(delay)
                delay = min(self.max_delay, delay * 2)
                continue
            delay = self.min_delay
            await self._lost.wait()
            self.reconnects += 1
            log.warning("%s: connection to %s lost; reconnecting", self.name, self.where())
            await asyncio.sleep(self.min_delay)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel an adapter's background tasks and wait until each has ended."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
