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
from dataclasses import dataclass
from typing import Any, Awaitable, Callable


@dataclass(frozen=True)
class Incoming:
    """One line a person said to the bot.

    ``identity`` is what ACL rules match: IRC ``nick!user@host`` (``...`` plus
    ``account`` when services tell it), XMPP bare JID, ``console:<user>``.
    ``reply_to`` is the adapter's own target for answers (a channel, a room
    JID, a nick or a JID); ``room`` is the channel or room name, None in private.
    ``nick`` is how to address the speaker in a room.
    """

    adapter: str
    identity: str
    text: str
    reply_to: str
    room: str | None = None
    nick: str | None = None
    account: str | None = None


Deliver = Callable[[Incoming], Awaitable[None]]


class Adapter(abc.ABC):
    """One chat network. Subclasses are built with ``(settings, bot_name)``."""

    name: str = "adapter"

    def __init__(self, settings: dict[str, Any], bot_name: str) -> None:
        self.settings = settings
        self.bot_name = bot_name

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Connect (in the background, with reconnects) and pass every message to ``deliver``."""

    @abc.abstractmethod
    def send(self, target: str, text: str) -> None:
        """Queue ``text`` (possibly several lines) for ``target``; delivered in order, rate-limited."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect and stop every background task."""


async def cancel_all(tasks: list["asyncio.Task[None]"]) -> None:
    """Cancel an adapter's background tasks and wait until each has ended."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
