"""A bot to talk to in tests, as Errbot's ``testbot``: lines in, answers out.

    async with running_bot(config) as bot:
        await bot.say("deploy loki.yaml")
        await bot.expect("loki: ready")

``QueueAdapter`` is a real adapter (the same interface IRC and XMPP implement)
whose network is a pair of queues; everything behind it is the real bot.

By default the test bot speaks as the console operator (identity
``console:tester``, ``local``: design files are read with the user's own rights);
``local=False``, for the bot or one line, makes it a chat network, whose files
come only from ``sources.file.roots``.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from bot.adapter import Adapter, Deliver, Incoming
from bot.app import Jarvis
from clipboard.config import Config


class QueueAdapter(Adapter):
    name = "test"

    def __init__(self, settings: dict[str, Any] | None = None, bot_name: str = "jarvis") -> None:
        super().__init__(settings or {}, bot_name)
        self.outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self.deliver = deliver

    def send(self, target: str, text: str) -> None:
        for line in text.splitlines():
            self.outbox.put_nowait((target, line))

    async def stop(self) -> None:
        self.deliver = None


class TestBot:
    __test__ = False  # not a pytest class

    def __init__(self, bot: Jarvis, adapter: QueueAdapter, identity: str, *,
                 local: bool = True) -> None:
        self.bot = bot
        self.adapter = adapter
        self.identity = identity
        self.local = local
        self.seen: list[str] = []

    async def say(self, text: str, *, identity: str | None = None, room: str | None = None,
                  nick: str | None = None, local: bool | None = None) -> None:
        assert self.adapter.deliver is not None
        await self.adapter.deliver(Incoming(
            adapter=self.adapter.name, identity=identity or self.identity, text=text,
            reply_to=room or "me", room=room, nick=nick,
            local=self.local if local is None else local))

    async def expect(self, pattern: str, timeout: float = 30.0) -> str:
        """Wait for a line matching ``pattern`` (a regex searched in the line); return it."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; "
                                     f"saw: {self.seen[-15:]}")
            try:
                _target, line = await asyncio.wait_for(self.adapter.outbox.get(), remaining)
            except TimeoutError:
                continue
            self.seen.append(line)
            if regex.search(line):
                return line

    async def ask(self, text: str, pattern: str = ".", timeout: float = 30.0, **kw: Any) -> str:
        await self.say(text, **kw)
        return await self.expect(pattern, timeout)

    async def poll(self, text: str, pattern: str, timeout: float = 30.0, **kw: Any) -> str:
        """Say ``text`` until the first line of an answer matches ``pattern``."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.say(text, **kw)
            _target, line = await asyncio.wait_for(self.adapter.outbox.get(), timeout)
            self.seen.append(line)
            if regex.search(line):
                return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} never answered {pattern!r}; last: {self.seen[-3:]}")

    async def lines_until(self, pattern: str, timeout: float = 30.0) -> list[str]:
        start = len(self.seen)
        await self.expect(pattern, timeout)
        return self.seen[start:]


@contextlib.asynccontextmanager
async def running_bot(config: Config, identity: str = "console:tester", *,
                      local: bool = True) -> AsyncIterator[TestBot]:
    adapter = QueueAdapter(bot_name=config.bot.name)
    async with Jarvis(config, role="jarvis test", adapters=[adapter], drive=True,
                      adopt=True) as jarvis:
        yield TestBot(jarvis, adapter, identity, local=local)
