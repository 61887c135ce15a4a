"""What every HTTP handler asks of a request: jarvis's parts, who is asking, whether
they may read or run a command, and how an answer is written.

Kept apart from ``bot.http.server`` so the route modules depend on this and the
server on them, never in a circle.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from bot.adapter import Incoming
from bot.grammar import Command
from bot.http.context import CONTEXT, Context
from clipboard import redact
from clipboard.errors import Denied, Unauthenticated

log = logging.getLogger(__name__)

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


def is_number(text: str) -> bool:
    """ASCII digits that fit SQLite's integer (``"²".isdigit()`` is true, ``int`` takes
    ``"1_000"`` and `` 5``, and a row id has at most 19 digits): every id or count a
    request gives is checked by this before it reaches the store."""
    return text.isascii() and text.isdigit() and len(text) <= 18
