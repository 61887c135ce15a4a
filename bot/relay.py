"""The bot's half of ``notify:*``: say a notify step's line in the rooms it names.

Workers cannot reach chat, so ``workers/notify.py`` leaves ``notify: {rooms, line}``
in the clipboard and the bot, on hearing that a ``notify:`` step succeeded, reads the
clipboard that step left in the store and says the line. A room is
``<adapter>:<target>`` (``irc:#ops``, ``xmpp:ops@conference.example.com``); the
bot says the line only in rooms that ``notify.rooms`` lists in its own
configuration, whatever the clipboard says, and not in the room the deployment was
asked from, which hears the deployment's own final line.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bot.core import Bot
from clipboard.config import Config
from clipboard.records import Event, EventKind
from clipboard.store import Store

log = logging.getLogger(__name__)

MAX_LINE = 400


class NotifyRelay:
    def __init__(self, config: Config, store: Store, bot: Bot) -> None:
        self.rooms = frozenset(config.notify.rooms)
        self.store = store
        self.bot = bot
        self._tasks: set[asyncio.Task[None]] = set()

    def wrap(self, announce: Callable[[Event], None]) -> Callable[[Event], None]:
        """The engine's callback: ``announce``, then the relay for a notify step."""
        def notify(event: Event) -> None:
            announce(event)
            if (event.kind == EventKind.STEP_OK and self.rooms and event.index
                    and str(event.step or "").startswith("notify:")):
                task = asyncio.get_running_loop().create_task(self._relay(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return notify

    async def _relay(self, event: Event) -> None:
        d = event.deployment
        try:
            clipboard = await self.store.clipboard(d.id, after_step=event.index)
        except Exception:
            log.exception("cannot read the clipboard of #%d after %s", d.id, event.step)
            return
        record: Any = (clipboard or {}).get("notify")
        if not isinstance(record, dict) or not record.get("line"):
            return
        text = " ".join(str(record["line"]).split())[:MAX_LINE]
        asker = d.reply_to or {}
        for room in record.get("rooms") or []:
            room = str(room)
            if room not in self.rooms:
                log.warning("#%d's %s named the room %r, which notify.rooms does not list; "
                            "not said there", d.id, event.step, room)
                continue
            adapter, _, target = room.partition(":")
            if adapter == asker.get("adapter") and target == asker.get("target"):
                continue
            self.bot.say({"adapter": adapter, "target": target}, [text])

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
