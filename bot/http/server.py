"""The HTTP server: one aiohttp application on the bot's loop, its errors as JSON.

Every answer that is not a success is ``{"error": "<one line>"}`` with the status the
failure calls for: 400 for input jarvis refuses (the same message chat would give),
401 without a known token, 403 naming the ACL rule that refused, 404, 409 when the host
is busy or locked, 500 (logged, never detailed) for jarvis's own faults. Messages pass
the configuration's scrubber like every chat line, so no secret leaves this way.

Routes come from one module per concern (``bot.http.api``, ``bot.http.events``,
``bot.http.metrics``, ``bot.http.page``), each adding its own to the application.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.adapter import Incoming
from bot.grammar import Command
from bot.http import page
from bot.http.context import CONTEXT, Context
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
READ_MODES = ("open", "token")


SCRUBBER = web.AppKey("scrubber", redact.Scrubber)  # the configuration's, built once per app


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status,
                        content_type="application/json")


def error_response(status: int, message: str, scrubber: redact.Scrubber) -> web.Response:
    return json_response({"error": scrubber.scrub(message)}, status)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT]


def identity(request: web.Request) -> str:
    """The caller's ``http:<token-name>``; 401 without a token jarvis knows."""
    found = context(request).tokens.identity(request.headers.get("Authorization"))
    if found is None:
        header = request.headers.get("Authorization")
        raise Unauthenticated("a bearer token is needed (Authorization: Bearer <token>)"
                              if not header else "the bearer token is not one jarvis knows")
    return found


def check_read(request: web.Request) -> None:
    """Read endpoints are open unless ``http.read: token``."""
    if context(request).config.http.read == "token":
        identity(request)


def incoming(request: web.Request, text: str) -> Incoming:
    """The request as the commands and the ACL see a chat line: a verified identity
    (the token proved it), never local (no file of this machine may be read), with no
    chat target (what happens next is told on the event stream and the webhooks)."""
    return Incoming(adapter="http", identity=identity(request), text=text, reply_to="",
                    verified=True, local=False)


def authorize(request: web.Request, command: Command) -> Incoming:
    """The caller, allowed to run ``command`` by the ACL; 401 or 403 otherwise."""
    asker = incoming(request, command.name)
    denial = context(request).acl.refusal(command, asker)
    if denial is not None:
        log.info("http denied: %s", denial)
        raise Denied(denial)
    return asker


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
    # The route modules import this module's helpers, so they are imported here, late.
    from bot.http import actions, api, events, metrics, openapi, watches
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
