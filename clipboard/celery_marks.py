"""The bot's reconciliation marks in the result backend: which steps it handed over.

Before a step's task goes to the broker its id is marked ``sending``, then ``sent``
(``SENT_PREFIX`` + task id, kept as long as results are). A bot restarted mid-step
runs the same step under the same task id (``StepContext.key``); finding ``sent`` it
waits for the answer instead of sending the step again. ``sending`` (the bot died
between the two) sends again: at worst a step runs twice, which ensure-style steps
allow, and it is never lost.

The marks are set in the thread that publishes the task (Celery's publish blocks), so
claim, publish and mark cost the bot's loop one hop to a thread, not three round trips.
While the backend is unreachable (a restart) each command is tried again for up to
``RETRY_FOR`` seconds, as Celery's publish is.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from clipboard.celery_app import SENT_PREFIX

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_FOR = 60.0
RETRY_MAX_DELAY = 2.0


class SentMarks:
    """Claim a task id before sending it; mark it sent after (blocking: call in a thread)."""

    def __init__(self, url: str, expires: int) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.expires = expires

    def claim(self, task_id: str) -> bool:
        """True: send it now; False: an earlier bot sent it, wait for its answer."""
        key = SENT_PREFIX + task_id
        if _retrying(lambda: self.redis.set(key, "sending", nx=True, ex=self.expires)):
            return True
        return _retrying(lambda: self.redis.get(key)) != "sent"

    def sent(self, task_id: str) -> None:
        _retrying(lambda: self.redis.set(SENT_PREFIX + task_id, "sent", ex=self.expires))

    def drop(self, task_id: str) -> None:
        """Forget a claim whose publish failed (the step was not handed over)."""
        self.redis.delete(SENT_PREFIX + task_id)

    def close(self) -> None:
        self.redis.close()


def _retrying(command: Callable[[], T]) -> T:
    deadline = time.monotonic() + RETRY_FOR
    delay = 0.1
    while True:
        try:
            return command()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
