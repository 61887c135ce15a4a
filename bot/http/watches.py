"""``/api/v1/watches``: register, list and delete webhook watches (``bot.webhooks``).

    POST   /api/v1/watches       {"name", "url", "secret", "host"?, "cluster"?, "kind"?,
                                  "after"?}  → 201 and the watch
    GET    /api/v1/watches       → {"watches": [...]}
    GET    /api/v1/watches/<id>  → the watch
    DELETE /api/v1/watches/<id>  → the watch deleted

Every one needs a token whose identity the ACL rule ``watch`` allows: a watch sends
the event stream to a URL of the caller's choosing, and the list names where it
goes. A watch starts after the newest event (or after event id ``after``). Its
secret is stored, to sign, and never answered; a configured watch
(``http.watches``) is listed but deleted only from the configuration.
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bot.grammar import Command
from bot.http.requests import authorize, context, json_response
from bot.webhooks import Webhooks
from clipboard.errors import JarvisError, NotFound
from clipboard.store_events import EventFilter

RULE = "watch"
FIELDS = frozenset({"name", "url", "secret", "host", "cluster", "kind", "after"})


def webhooks(request: web.Request) -> Webhooks:
    found = context(request).webhooks
    if found is None:
        raise NotFound("webhook watches are off in this process (only a jarvis that "
                       "adopts deployments delivers them)")
    return found


def _text(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise JarvisError(f"the body needs {key!r}")
        return None
    if not isinstance(value, str):
        raise JarvisError(f"{key!r} must be a string")
    return value


def _watch_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise NotFound(f"no watch {raw!r} (watches are named by their number)")
    return int(raw)


async def create(request: web.Request) -> web.Response:
    asker = authorize(request, Command(RULE))
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JarvisError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise JarvisError("the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise JarvisError(f"unknown field(s) {', '.join(unknown)}; a watch has "
                          f"{', '.join(sorted(FIELDS))}")
    after = body.get("after")
    if after is not None and (not isinstance(after, int) or isinstance(after, bool)
                              or after < 0):
        raise JarvisError("'after' must be an event id (a whole number)")
    wanted = EventFilter(host=_text(body, "host"), cluster=_text(body, "cluster"),
                         kind=_text(body, "kind"))
    watch = await webhooks(request).add(
        str(_text(body, "name", True)), str(_text(body, "url", True)),
        str(_text(body, "secret", True)), wanted, by=asker.identity, after=after)
    return json_response(watch, 201)


async def listing(request: web.Request) -> web.Response:
    authorize(request, Command(RULE))
    return json_response({"watches": webhooks(request).describe_all()})


async def one(request: web.Request) -> web.Response:
    authorize(request, Command(RULE))
    return json_response(webhooks(request).get(_watch_id(request)))


async def delete(request: web.Request) -> web.Response:
    authorize(request, Command(RULE))
    return json_response(await webhooks(request).remove(_watch_id(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/watches", create)
    app.router.add_get("/api/v1/watches", listing)
    app.router.add_get("/api/v1/watches/{id}", one)
    app.router.add_delete("/api/v1/watches/{id}", delete)
