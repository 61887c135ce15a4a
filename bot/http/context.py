"""What every HTTP handler may use, handed over once by the composition root.

Handlers reach jarvis's parts only through ``Context`` (``request.app[CONTEXT]``), never
through globals or the bot: the same store, engine, commands and ACL serve chat and
HTTP, so an answer or a refusal is the same whichever way it was asked.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from bot.acl import Acl
from bot.commands import Commands
from bot.http.auth import Tokens
from bot.webhooks import Webhooks
from clipboard.config import Config
from clipboard.engine import Engine
from clipboard.eventlog import EventLog
from clipboard.store import Store

if TYPE_CHECKING:  # bot.http.metrics reads requests through bot.http.requests, which imports this
    from bot.http.metrics import Metrics


@dataclass
class Context:
    """``ready`` says whether the chat adapters are connected (``/readyz``); ``events``
    is the event log's live side (SSE), ``webhooks`` the watches' delivery (its
    ``counts()`` are the delivered and failed POSTs ``/metrics`` reports); ``metrics``
    is what ``/metrics`` exports (None: not kept)."""

    config: Config
    store: Store
    engine: Engine
    commands: Commands
    acl: Acl
    tokens: Tokens
    ready: Callable[[], bool]
    events: EventLog | None = None
    webhooks: Webhooks | None = None
    metrics: Metrics | None = None


CONTEXT = web.AppKey("context", Context)
