"""The bot's view of the Celery result backend (redis), without blocking its loop.

Celery's own ``AsyncResult.get`` blocks a thread per step; a bot with hundreds of
steps in flight would need hundreds of threads. Celery's redis backend publishes
every state it stores (STARTED with the worker's name, then SUCCESS or FAILURE) on
the channel named like its key, so one ``redis.asyncio`` connection subscribed to
the pattern of jarvis's task ids hears every step's progress, and each step in
flight reads its own messages from a queue.

When the connection drops (redis restarted) the reader connects again, subscribes,
and reads every watched key once: a result stored while it was away is not missed.

Reading one key (``fetch``) is tried again while the backend is unreachable, for up
to ``RETRY_FOR`` seconds.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_PREFIX = "celery-task-meta-"
RECONNECT_MAX = 2.0
RETRY_FOR = 60.0
CONNECTIONS = 16  # steps beyond it wait for a connection: a pool without a cap fails them


class Results:
    """Every jarvis task's states as the result backend publishes them."""

    def __init__(self, url: str, id_prefix: str) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=True, health_check_interval=10, max_connections=CONNECTIONS,
            timeout=None)
        self.redis = aioredis.Redis(connection_pool=pool)
        self.pattern = f"{KEY_PREFIX}{id_prefix}*"
        self.watchers: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="celery-results")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.redis.aclose()

    def watch(self, task_id: str) -> asyncio.Queue[dict[str, Any]]:
        """The queue ``task_id``'s states arrive on (call before sending it)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.watchers[task_id] = queue
        return queue

    def unwatch(self, task_id: str) -> None:
        self.watchers.pop(task_id, None)

    async def fetch(self, task_id: str) -> None:
        """Hand the stored state of ``task_id``, if any, to its watcher."""
        stored = await self._retrying(lambda: self.redis.get(KEY_PREFIX + task_id))
        if stored is not None:
            self._deliver(task_id, stored)


    async def _retrying(self, command: Callable[[], Awaitable[T]]) -> T:
        """``command``, tried again while the result backend is unreachable (a restart),
        for up to ``RETRY_FOR`` seconds, as the broker's publish is."""
        deadline = asyncio.get_running_loop().time() + RETRY_FOR
        delay = 0.1
        while True:
            try:
                return await command()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)

    async def _read(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.psubscribe(self.pattern)
                    self.connected.set()
                    if delay > 0.1:
                        log.warning("the Celery result backend is back")
                    delay = 0.1
                    for task_id in list(self.watchers):
                        await self.fetch(task_id)
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            channel = str(message["channel"])
                            self._deliver(channel[len(KEY_PREFIX):], message["data"])
            except (RedisError, OSError) as exc:
                if self.connected.is_set() or delay == 0.1:
                    log.warning("the Celery result backend is unreachable (%s); trying again",
                                type(exc).__name__)
                self.connected.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)

    def _deliver(self, task_id: str, data: Any) -> None:
        queue = self.watchers.get(task_id)
        if queue is None:
            return
        try:
            meta = json.loads(data)
        except (TypeError, ValueError):
            log.warning("task %s: the result backend holds something that is not JSON", task_id)
            return
        if isinstance(meta, dict):
            queue.put_nowait(meta)
