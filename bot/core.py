"""The bot: chat adapters in, commands through the ACL, answers and announcements out.

Every incoming line is handled in its own task, so a slow source (a gist that
takes its time) never delays another person's ``status``. Announcements go to
where the deployment was asked for (stored with it, so they survive a restart),
through the adapter's ordered, rate-limited outbox, ahead of answers.

On shared networks each identity gets a fair share (``bot.fairness``): its
commands are rate-limited before anything is parsed, its waiting answer lines
are capped, and a long answer said in a room goes to the asker privately.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot import report
from bot.adapter import Adapter, Incoming
from bot.fairness import CommandLimiter, Verdict, identity_key
from bot.grammar import parse, strip_address
from clipboard import redact
from clipboard.config import Config
from clipboard.errors import JarvisError
from clipboard.records import Event

if TYPE_CHECKING:
    from bot.acl import Acl
    from bot.commands import Commands
    from bot.progress import ClusterProgress

log = logging.getLogger(__name__)

ADAPTERS = {
    "console": "bot.console:ConsoleAdapter",
    "irc": "bot.irc:IrcAdapter",
    "xmpp": "bot.xmpp:XmppAdapter",
}


def build_adapters(config: Config, bot_name: str) -> list[Adapter]:
    """One adapter per enabled ``chat.<name>`` section."""
    adapters = []
    for name, settings in config.section("chat").items():
        if name not in ADAPTERS or not isinstance(settings, dict) or not settings.get("enabled"):
            continue
        module_name, _, class_name = ADAPTERS[name].partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        adapters.append(cls(settings, bot_name))
    return adapters


class Bot:
    """The chat side: the adapters, and what is said through them."""

    def __init__(self, config: Config, adapters: list[Adapter]) -> None:
        self.name = config.bot.name
        self.verbose = config.bot.verbose
        self.adapters: dict[str, Adapter] = {a.name: a for a in adapters}
        self.fairness = config.fairness
        self.limiter = CommandLimiter(self.fairness.command_rate, self.fairness.command_burst)
        self.scrubber = redact.Scrubber(config.secrets)
        self.commands: Commands | None = None
        self.acl: Acl | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def serve(self, commands: Commands, acl: Acl) -> None:
        """What the bot answers with, and who may ask (given by the composition root)."""
        self.commands, self.acl = commands, acl

    async def start(self) -> None:
        for adapter in self.adapters.values():
            await adapter.start(self.handle)

    async def stop(self) -> None:
        for adapter in self.adapters.values():
            await adapter.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def connected(self) -> bool:
        """Whether every networked adapter is logged in and may send (``/readyz``); the
        console and in-process adapters have no link to lose."""
        links = [getattr(adapter, "connected", None) for adapter in self.adapters.values()]
        return all(link.is_set() for link in links if isinstance(link, asyncio.Event))

    @property
    def answering(self) -> bool:
        return bool(self._tasks)

    async def handle(self, incoming: Incoming) -> None:
        """Take one line from an adapter; answer in the background."""
        text = strip_address(incoming.text, self.name, private=incoming.room is None)
        if text is None:
            return
        adapter = self.adapters.get(incoming.adapter)
        if adapter is not None and adapter.shared:
            verdict = self.limiter.check(identity_key(incoming))
            if verdict is Verdict.IGNORE:
                return
            if verdict is Verdict.WARN:
                self.answer(incoming, [self.limiter.slow_down()])
                return
        task = asyncio.create_task(self._answer(incoming, text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, incoming: Incoming, text: str) -> None:
        assert self.commands is not None and self.acl is not None, "serve() comes first"
        try:
            command = parse(text)
            denial = self.acl.refusal(command, incoming)
            if denial:
                log.info("denied: %s", denial)
                lines = [denial]
            else:
                lines = await self.commands.run(command, incoming)
        except JarvisError as exc:
            lines = [str(exc)]
        except Exception as exc:
            log.exception("command %r from %s failed", text, incoming.identity)
            lines = [f"internal error: {type(exc).__name__}: {exc}"]
        self.answer(incoming, lines)

    def answer(self, incoming: Incoming, lines: list[str]) -> None:
        """Answer ``incoming``'s speaker: in the room, or privately when long (where the
        network can); as the speaker's own lines, capped, taking turns with other people's."""
        adapter = self.adapters.get(incoming.adapter)
        if adapter is None:
            log.warning("no adapter %r for a reply to %s", incoming.adapter, incoming.reply_to)
            return
        lines = self.scrubber.lines(lines)  # one of the two ways out to chat (say is the other)
        lead = f"{incoming.nick}: " if incoming.room and incoming.nick else ""
        owner, cap = identity_key(incoming), self.fairness.queue_cap
        private = adapter.private_target(incoming) if incoming.room else None
        if private and 0 < self.fairness.private_over < len(lines):
            adapter.answer(incoming.reply_to, f"{lead}{len(lines)} lines: sent to you privately",
                           owner=owner, cap=cap, lead=lead)
            adapter.answer(private, "\n".join(lines), owner=owner, cap=cap)
            return
        adapter.answer(incoming.reply_to, "\n".join(lead + line for line in lines), owner=owner,
                       cap=cap, lead=lead)

    def announcer(self, progress: ClusterProgress) -> Callable[[Event], None]:
        """The engine's callback: events become lines where the deployment was asked
        for; a cluster's are aggregated (bot.progress)."""
        def announce(event: Event) -> None:
            if event.deployment.cluster is not None:
                progress.event(event)
                return
            line = report.event_line(event, self.verbose)
            if line is None:
                return
            log.info("%s", line)
            reply_to: dict[str, Any] | None = event.deployment.reply_to
            if reply_to:
                self.say(reply_to, [line])
        return announce

    def say(self, reply_to: dict[str, Any], lines: list[str]) -> None:
        """A deployment's lines, ahead of the answers waiting on that network (bot.outbox)."""
        adapter = self.adapters.get(reply_to["adapter"])
        if adapter is None:
            log.warning("no adapter %r for an announcement to %s", reply_to["adapter"],
                        reply_to["target"])
            return
        nick = reply_to.get("nick") if reply_to.get("room") else None
        prefix = f"{nick}: " if nick else ""
        lines = self.scrubber.lines(lines)
        adapter.announce(reply_to["target"], "\n".join(prefix + line for line in lines))
