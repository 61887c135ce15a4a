"""The bot: chat adapters in, commands through the ACL, answers and announcements out.

Every incoming line is handled in its own task, so a slow source (a gist that
takes its time) never delays another person's ``status``. Announcements go to
where the deployment was asked for (stored with it, so they survive a restart),
through the adapter's ordered, rate-limited outbox.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from typing import Any

from bot import report
from bot.acl import Acl
from bot.adapter import Adapter, Incoming
from bot.commands import Commands
from bot.grammar import GrammarError, parse, strip_address
from bot.progress import ClusterProgress
from clipboard import redact
from clipboard.config import Config
from clipboard.engine import Engine, Event
from clipboard.errors import JarvisError
from clipboard.runner import Runner
from clipboard.store import Store

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL = 0.001

ADAPTERS = {
    "console": "bot.console:ConsoleAdapter",
    "irc": "bot.irc:IrcAdapter",
    "xmpp": "bot.xmpp:XmppAdapter",
}


def build_adapters(config: Config, bot_name: str) -> list[Adapter]:
    """One adapter per enabled ``chat.<name>`` section."""
    adapters = []
    for name, settings in config.section("chat").items():
        if not isinstance(settings, dict) or not settings.get("enabled"):
            continue
        module_name, _, class_name = ADAPTERS[name].partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        adapters.append(cls(settings, bot_name))
    return adapters


class Bot:
    def __init__(self, config: Config, adapters: list[Adapter] | None = None) -> None:
        self.config = config
        self.name = str(config.get("bot.name"))
        self.verbose = bool(config.get("bot.verbose"))
        self.redact_keys = tuple(config.get("clipboard.redact_keys") or redact.DEFAULT_KEYS)
        self.store = Store(config.get("store.path"))
        self.runner = Runner(config)
        self.engine = Engine(config, self.store, self.runner, notify=self.announce)
        self.progress = ClusterProgress(self.store, self._say,
                                        float(config.get("clusters.announce_interval")))
        self.acl = Acl(config.section("acl"))
        self.commands = Commands(self)
        built = build_adapters(config, self.name) if adapters is None else adapters
        self.adapters: dict[str, Adapter] = {a.name: a for a in built}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        # The store's threads hand results back to the loop through the GIL; at the
        # default 5 ms switch interval a busy thread delays each answer by up to that,
        # twice per store read. A chat bot's answers matter more than that throughput.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        await self.store.open()
        await self.engine.start()
        for adapter in self.adapters.values():
            await adapter.start(self.handle)
        log.info("%s is up: adapters %s", self.name, ", ".join(self.adapters) or "none")

    async def stop(self) -> None:
        for adapter in self.adapters.values():
            await adapter.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.progress.close()
        await self.engine.stop()
        await self.store.close()
        self.stopped.set()

    async def handle(self, incoming: Incoming) -> None:
        """Take one line from an adapter; answer in the background."""
        text = strip_address(incoming.text, self.name, private=incoming.room is None)
        if text is None:
            return
        task = asyncio.create_task(self._answer(incoming, text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, incoming: Incoming, text: str) -> None:
        try:
            command = parse(text)
            denial = self.acl.denial(command.name, incoming)
            if denial:
                log.info("denied: %s", denial)
                lines = [denial]
            else:
                lines = await self.commands.run(command, incoming)
        except (JarvisError, GrammarError) as exc:
            lines = [str(exc)]
        except Exception as exc:
            log.exception("command %r from %s failed", text, incoming.identity)
            lines = [f"internal error: {type(exc).__name__}: {exc}"]
        self.reply(incoming.adapter, incoming.reply_to, incoming.nick if incoming.room else None,
                   lines)

    def reply(self, adapter_name: str, target: str, nick: str | None, lines: list[str]) -> None:
        adapter = self.adapters.get(adapter_name)
        if adapter is None:
            log.warning("no adapter %r for a reply to %s", adapter_name, target)
            return
        prefix = f"{nick}: " if nick else ""
        adapter.send(target, "\n".join(prefix + line for line in lines))

    def announce(self, event: Event) -> None:
        """Engine events become lines where the deployment was asked for; a cluster's
        are aggregated (bot.progress)."""
        if event.deployment.cluster is not None:
            self.progress.event(event)
            return
        line = report.event_line(event, self.verbose)
        if line is None:
            return
        log.info("%s", line)
        reply_to: dict[str, Any] | None = event.deployment.reply_to
        if reply_to:
            self._say(reply_to, [line])

    def _say(self, reply_to: dict[str, Any], lines: list[str]) -> None:
        nick = reply_to.get("nick") if reply_to.get("room") else None
        self.reply(reply_to["adapter"], reply_to["target"], nick, lines)
