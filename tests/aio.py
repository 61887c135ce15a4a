"""An event loop in a thread, so session-scoped fixtures can hold async objects
(a runner with its fork server, a bot) across synchronous tests."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from bot.adapter import Incoming, ReconnectingAdapter

if TYPE_CHECKING:
    from bot.testing import TestBot
    from clipboard.config import Config

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def bot_in_thread(config: Config) -> Iterator[tuple[LoopThread, TestBot]]:
    """A real bot (``bot.testing.running_bot``) on a loop in a thread, stopped on exit."""
    from bot.testing import running_bot
    loop = LoopThread()
    manager = running_bot(config)
    try:
        bot = loop.run(manager.__aenter__())
        try:
            yield loop, bot
        finally:
            loop.run(manager.__aexit__(None, None, None))
    finally:
        loop.close()


def say_until(loop: LoopThread, bot: TestBot, text: str, pattern: str,
              timeout: float = 30) -> list[str]:
    """Say ``text``; the lines that came up to and including the one matching ``pattern``."""
    async def go() -> list[str]:
        await bot.say(text)
        return await bot.lines_until(pattern, timeout)
    return loop.run(go(), timeout + 10)


def run_within(test: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    """Run one async test scenario on a fresh loop, failing it after ``timeout`` seconds."""
    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await test()
    asyncio.run(bounded())


class Recorder:
    """The core's place behind an adapter under test: collects what it delivers."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Incoming] = asyncio.Queue()

    async def __call__(self, incoming: Incoming) -> None:
        await self.queue.put(incoming)

    async def next(self, timeout: float = 10) -> Incoming:
        async with asyncio.timeout(timeout):
            return await self.queue.get()


async def assert_never_connects(adapter: ReconnectingAdapter, seconds: float = 3) -> None:
    """Start ``adapter``, give it ``seconds`` of attempts, and fail if any connected."""
    await adapter.start(Recorder())
    try:
        await asyncio.sleep(seconds)
        assert not adapter.connected.is_set(), f"{adapter.name} connected to {adapter.where()}"
    finally:
        await adapter.stop()


def failure_while_ticking(make: Callable[[], Awaitable[Any]]) -> tuple[int, BaseException]:
    """Run ``make()`` on a fresh loop beside a 50 ms ticker until it fails: how many
    ticks the loop made meanwhile (few means it was blocked) and the exception."""
    async def scenario() -> tuple[int, BaseException]:
        ticks = 0
        task = asyncio.create_task(make())
        while not task.done():
            await asyncio.sleep(0.05)
            ticks += 1
        error = task.exception()
        assert error is not None, f"it succeeded: {task.result()!r}"
        return ticks, error
    return asyncio.run(scenario())
