"""The composition root: one object builds jarvis from its configuration and starts
and stops its parts in order.

Every way of running jarvis goes through ``Jarvis``: the console bot and ``jarvis
run`` (which drive deployments and take up those whose owner is gone), ``jarvis
deploy`` (drives the one it starts, takes up nothing), the CLI's queries (the store
alone) and the test bot. No caller opens a store or starts a runner by hand, so
each entry point sees the same locks, the same ownership and the same commands.

    async with Jarvis(config, role="jarvis run", drive=True, adopt=True) as jarvis:
        await jarvis.stopped.wait()

While it runs, every handler of the root logger (where ``jarvis``'s command line,
or a host program, configured logging) carries a ``clipboard.redact.ScrubFilter``:
no log line, jarvis's or a library's, shows URL credentials or a configured secret.

Start order: store, the event log and the webhook watches (when driving; watches
only in a process that adopts, see ``bot.webhooks``), runner (its worker catalog),
engine (taking up orphans), adapters, the HTTP server (``http.listen``, when
driving); stop is the reverse, so no adapter or HTTP client hears of a deployment
after the engine stopped, every event is in the store before it closes, and no
worker runs after the store closed.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from bot.acl import Acl
from bot.adapter import Adapter
from bot.commands import Commands
from bot.core import Bot, build_adapters
from bot.progress import ClusterProgress
from bot.relay import NotifyRelay
from clipboard import celery_app, redact
from clipboard.config import Config
from clipboard.engine import Engine
from clipboard.eventlog import EventLog
from clipboard.owner import Owner
from clipboard.runner import Runner
from clipboard.store import Store

if TYPE_CHECKING:
    from bot.http.metrics import Metrics
    from bot.http.server import HttpServer
    from bot.webhooks import Webhooks

log = logging.getLogger(__name__)

# The store's threads hand results back to the loop through the GIL; at the default
# 5 ms switch interval a busy thread delays each answer by up to that, twice per store
# read. A bot's answers matter more than that throughput. It is the process's setting,
# so the process's root sets it, and only for the kinds that serve people.
GIL_SWITCH_INTERVAL = 0.001


class Jarvis:
    """jarvis, assembled. ``drive``: run deployments (start the runner, keep leases);
    ``adopt``: take up deployments whose owner is gone; ``catalog``: learn the worker
    tasks without driving (``jarvis workers``, ``check-config``)."""

    def __init__(self, config: Config, *, role: str, adapters: list[Adapter] | None = None,
                 drive: bool = False, adopt: bool = False, catalog: bool = False) -> None:
        self.config = config
        self.drive = drive
        self.adopt = adopt and drive
        self.catalog = catalog or drive
        self.owner = Owner.this_process(role)
        self.store = Store(config.store.path)
        self.runner = _runner(config)
        built = build_adapters(config, config.bot.name) if adapters is None \
            else adapters
        self.bot = Bot(config, built)
        self.progress = ClusterProgress(self.store, self.bot.say,
                                        config.clusters.announce_interval)
        self.relay = NotifyRelay(config, self.store, self.bot)
        serving = drive and config.http.listen is not None
        self.metrics = _metrics(self.bot) if serving else None
        self.events = EventLog(config, self.store, self._secrets_held) if drive else None
        announce = self.relay.wrap(self.bot.announcer(self.progress))
        if self.metrics is not None:
            announce = self.metrics.wrap(announce)
        self.engine = Engine(config, self.store, self.runner, self.owner,
                             notify=self.events.wrap(announce) if self.events else announce)
        self.webhooks = _webhooks(config, self.store, self.events) \
            if self.events is not None and self.adopt else None
        self.commands = Commands(config, self.store, self.engine, self.runner, self.progress,
                                 bot_name=self.bot.name)
        self.acl = Acl(config.section("acl"))
        self.bot.serve(self.commands, self.acl)
        self.http = self._http_server() if serving else None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        self._stack.callback(redact.guard_logging(self.bot.scrubber))
        await self.store.open()
        self._stack.push_async_callback(self.store.close)
        if self.events is not None:
            await self.events.start()
            self._stack.push_async_callback(self.events.close)
        if self.webhooks is not None:
            self._stack.push_async_callback(self.webhooks.close)
            await self.webhooks.start()
        if self.catalog:
            self._stack.push_async_callback(self.runner.close)
            await self.runner.start()
        if self.drive:
            if self.bot.adapters:
                sys.setswitchinterval(GIL_SWITCH_INTERVAL)
            self._stack.push_async_callback(self.relay.close)
            self._stack.push_async_callback(self.engine.stop)
            self._stack.callback(self.progress.close)
            await self.engine.start(adopt=self.adopt)
        self._stack.push_async_callback(self.bot.stop)
        await self.bot.start()
        if self.http is not None:
            self._stack.push_async_callback(self.http.stop)
            await self.http.start()
        log.info("%s is up (%s, pid %d): adapters %s", self.bot.name, self.owner.role,
                 self.owner.pid, ", ".join(self.bot.adapters) or "none")

    def _http_server(self) -> HttpServer:
        from bot.http.auth import Tokens
        from bot.http.context import Context
        from bot.http.server import HttpServer
        return HttpServer(Context(self.config, self.store, self.engine, self.commands, self.acl,
                                  Tokens(self.config.http.tokens), self.bot.connected,
                                  self.events, self.webhooks, self.metrics))

    def _secrets_held(self, deployment_id: int) -> set[str]:
        """The secrets the drive knows a deployment has held (the event log scrubs them)."""
        return self.engine.driver.known.get(deployment_id, set())

    @property
    def busy(self) -> bool:
        """Whether a deployment or a command is still in hand (the console waits for it)."""
        return bool(self.engine.running) or self.bot.answering

    def adapter(self, name: str) -> Any:
        return self.bot.adapters.get(name)


# aiohttp and prometheus-client cost the import of this module ~0.4 s, which every CLI
# query (``jarvis status``) would pay: only a process that serves HTTP or delivers
# webhooks imports them, as only a bot on the Celery backend imports celery.
def _metrics(bot: Bot) -> Metrics:
    from bot.http.metrics import Metrics
    return Metrics(bot.adapters)


def _webhooks(config: Config, store: Store, events: EventLog) -> Webhooks:
    from bot.webhooks import Webhooks
    return Webhooks(config, store, events)


def _runner(config: Config) -> Runner:
    """The runner ``runner.backend`` names: this process's fork servers, or Celery workers."""
    if celery_app.backend_of(config) == "celery":
        from clipboard.celery_runner import CeleryRunner  # celery's imports cost ~0.3 s
        return CeleryRunner(config)
    return Runner(config)
