"""The HTTP server: one aiohttp application on the bot's loop, its errors as JSON.

Every answer that is not a success is ``{"error": "<one line>"}`` with the status the
failure calls for: 400 for input jarvis refuses (the same message chat would give),
401 without a known token, 403 naming the ACL rule that refused, 404, 409 when the host
is busy or locked, 500 (logged, never detailed) for jarvis's own faults. Messages pass
the configuration's scrubber like every chat line, so no secret leaves this way.

Routes come from one module per concern (``bot.http.api``, ``bot.http.events``,
``bot.http.metrics``, ``bot.http.page``), each adding its own to the application; what
they share about a request (who asks, may they read, the ACL) is ``bot.http.requests``,
so no route module imports this one.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.http import actions, api, events, metrics, openapi, page, watches
from bot.http.context import CONTEXT, Context
from bot.http.requests import SCRUBBER, context, error_response, json_response
from clipboard import redact
from clipboard.errors import (
    ConfigError,
    Denied,
    HostBusy,
    HostLocked,
    JarvisError,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATUS_OF: tuple[tuple[type[JarvisError], int], ...] = (
    (Unauthenticated, 401), (Denied, 403), (NotFound, 404), (HostBusy, 409), (HostLocked, 409))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    scrubber = request.app[SCRUBBER]
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, scrubber)
    except JarvisError as exc:
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
        return error_response(status, str(exc), scrubber)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error (see jarvis's log)", scrubber)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the loop answers."""
    return json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the store takes a write and the chat adapters are connected."""
    ctx = context(request)
    problems = []
    try:
        await ctx.store.check_writable()
    except JarvisError as exc:
        problems.append(f"store: {exc}")
    if not ctx.ready():
        problems.append("chat: not every adapter is connected")
    if problems:
        return json_response({"ok": False, "problems": problems}, 503)
    return json_response({"ok": True})


def build_app(ctx: Context) -> web.Application:
    app = web.Application(middlewares=[json_errors],
                          client_max_size=ctx.config.limits.max_bytes + 65536)
    app[CONTEXT] = ctx
    app[SCRUBBER] = redact.Scrubber(ctx.config.secrets)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for routes in (api, actions, openapi, metrics, events, watches, page):
        routes.add_routes(app)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, colon, port = listen.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise ConfigError(f"http.listen must be <address>:<port>, e.g. 127.0.0.1:8080, "
                          f"not {listen!r}")
    return host.strip("[]"), int(port)


class HttpServer:
    """The listening socket's lifetime: ``start`` binds (port 0 picks a free one, which
    ``port`` then tells), ``stop`` closes connections and the listener."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.host, self.port = parse_listen(ctx.config.http.listen or "")
        self.app = build_app(ctx)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"http.listen {self.host}:{self.port}: {exc.strerror}") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("HTTP API on http://%s:%d/", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
