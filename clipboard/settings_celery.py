"""``runner.celery``, typed (``clipboard.settings`` explains the scheme; apart only to
keep that module short). Read by the bot's Celery runner and by ``jarvis worker``
(``clipboard.celery_app``), whatever ``runner.backend`` says, so a worker host with
the bot's file reads the same broker. What makes the section unusable together with
the rest (routes that route nothing, timeouts the visibility timeout does not cover)
is ``celery_app.problems``', so check-config names every such line at once."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from clipboard.secret import Secret


@dataclass(frozen=True)
class CelerySettings:
    broker_url: str
    broker_password: Secret
    result_backend: str | None
    default_queue: str
    queues: Mapping[str, str]
    retry_lost: bool
    visibility_timeout: float
    restore_interval: float
    result_expires: int
    answer_grace: float
