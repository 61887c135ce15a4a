"""The API's reads (``GET /api/v1/…``): hosts, deployments (listed, one, its steps, its
clipboard after any step, its logs), clusters and locks, as JSON.

Each answer is built from what chat's commands read, so the two never disagree:
``hosts/<host>`` is ``status <host>`` (``Store.status_of``, one statement), the
clipboard and logs are the ``clipboard`` and ``logs`` commands' own selection and
redaction (``bot.inspection``), a cluster is the summary ``status <cluster>`` gives.
Reads are open, or need a token when ``http.read: token`` (``check_read``).

Every answer passes ``shapes.scrubbed`` with the configuration's secrets; answers
about one deployment's content (clipboard, logs) with every secret it held as well.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.http import shapes
from bot.http.requests import SCRUBBER, check_read, context, is_number, json_response
from clipboard import redact
from clipboard.errors import JarvisError, NotFound
from clipboard.records import Deployment, State, summarize
from clipboard.store_queries import MAX_PAGE
from clipboard.validate import check_hostname

PREFIX = "/api/v1"
DEFAULT_PAGE = 50
STATES = frozenset(str(state) for state in State)


def answer(request: web.Request, data: Any, scrub: Callable[[str], str] | None = None,
           status: int = 200) -> web.Response:
    """``data`` as JSON, every string scrubbed of the configuration's secrets (and by
    ``scrub``, a deployment's scrubber)."""
    data = shapes.scrubbed(data, request.app[SCRUBBER].scrub)
    if scrub is not None:
        data = shapes.scrubbed(data, scrub)
    return json_response(data, status)


def whole_number(request: web.Request, name: str, *, low: int = 1,
                 high: int | None = None) -> int | None:
    """The query parameter ``name`` as a whole number in range, None when absent; 400 otherwise."""
    text = request.query.get(name)
    if text is None or text == "":
        return None
    if not is_number(text) or int(text) < low or (high is not None and int(text) > high):
        bound = f" to {high}" if high is not None else " or more"
        raise JarvisError(f"{name} must be a whole number from {low}{bound}, not {text[:40]!r}")
    return int(text)


async def deployment_of(request: web.Request) -> Deployment:
    """The deployment the path's ``{id}`` names; 404 when there is none."""
    text = request.match_info["id"]
    if not is_number(text):
        raise JarvisError(f"a deployment id is a number, not {text[:40]!r}")
    found = await context(request).store.deployment(int(text))
    if found is None:
        raise NotFound(f"no deployment {text}")
    return found


async def host(request: web.Request) -> web.Response:
    """What ``status <host>`` says: its latest deployment, its steps, its lock."""
    check_read(request)
    ctx = context(request)
    name = check_hostname(request.match_info["host"])
    found = await ctx.store.status_of(name, {}, 1, name)
    if found.cluster is not None:
        raise NotFound(f"{name} is a cluster: see {PREFIX}/clusters/{name}")
    if found.deployment is None and found.lock is None:
        raise NotFound(f"{name}: never deployed")
    return answer(request, shapes.host(name, found.deployment, found.steps, found.lock))


async def deployments(request: web.Request) -> web.Response:
    """Newest first, filtered by host, cluster and state, a page at a time."""
    check_read(request)
    query = request.query
    hostname = check_hostname(query["host"]) if query.get("host") else None
    state = query.get("state") or None
    if state is not None and state not in STATES:
        raise JarvisError(f"state must be one of {', '.join(sorted(STATES))}, not "
                          f"{state[:40]!r}")
    limit = whole_number(request, "limit", high=MAX_PAGE) or DEFAULT_PAGE
    before = whole_number(request, "before")
    found, cursor = await context(request).store.deployments_page(
        host=hostname, cluster=(query.get("cluster") or "").lower() or None, state=state,
        before=before, limit=limit)
    data = {"deployments": [shapes.deployment(d) for d in found],
            "next": None if cursor is None else next_link(request, cursor)}
    return answer(request, data)


def next_link(request: web.Request, cursor: int) -> str:
    """The URL of the next page: this one's filters, ``before`` the last id shown."""
    return str(request.rel_url.update_query({"before": str(cursor)}))


async def deployment(request: web.Request) -> web.Response:
    check_read(request)
    return answer(request, shapes.deployment(await deployment_of(request)))


async def steps(request: web.Request) -> web.Response:
    """Every step run and undo of the deployment, every attempt, in the order they ran."""
    check_read(request)
    d = await deployment_of(request)
    records = await context(request).store.steps(d.id)
    return answer(request, [shapes.step(r) for r in records])


async def clipboard(request: web.Request) -> web.Response:
    """The clipboard after a step (``after=3``, ``after=core:randpass``, ``after=3.undo``;
    ``0``: the design as fetched; none: the latest), redacted as chat's ``clipboard``."""
    check_read(request)
    ctx = context(request)
    d = await deployment_of(request)
    words = [w for w in [request.query.get("after", ""), f"#{d.id}"] if w]
    inspection = ctx.commands.inspection
    title, data, scrub = await inspection.clipboard_of(d.hostname, words)
    if data is None:
        raise NotFound(title)
    shown = redact.redact(data, inspection.keys)
    body = {"deployment": d.id, "hostname": d.hostname, "title": title, "clipboard": shown}
    return answer(request, body, scrub)


async def logs(request: web.Request) -> web.Response:
    """What a step left on stderr (``step=3``; by default the step that failed last, else
    the last that ran), scrubbed as chat's ``logs``."""
    check_read(request)
    d = await deployment_of(request)
    words = [w for w in [request.query.get("step", ""), f"#{d.id}"] if w]
    lines = await context(request).commands.inspection.logs(d.hostname, words)
    return answer(request, {"deployment": d.id, "hostname": d.hostname, "lines": lines})


async def cluster(request: web.Request) -> web.Response:
    """A cluster run (``shop#2``, or ``shop``: its newest run): counts and every host."""
    check_read(request)
    ctx = context(request)
    name = request.match_info["name"].lower()
    cluster_id = await ctx.store.latest_cluster(name)
    if cluster_id is None:
        raise NotFound(f"no cluster {'run' if '#' in name else 'named'} {name}")
    members = await ctx.store.by_cluster(cluster_id)
    summary = summarize(members, len(members))
    return answer(request, shapes.cluster(cluster_id, members, summary))


async def locks(request: web.Request) -> web.Response:
    check_read(request)
    held = await context(request).store.locks()
    return answer(request, {"locks": [shapes.lock(found) for found in held]})


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/hosts/{{host}}", host)
    app.router.add_get(f"{PREFIX}/deployments", deployments)
    app.router.add_get(f"{PREFIX}/deployments/{{id}}", deployment)
    app.router.add_get(f"{PREFIX}/deployments/{{id}}/steps", steps)
    app.router.add_get(f"{PREFIX}/deployments/{{id}}/clipboard", clipboard)
    app.router.add_get(f"{PREFIX}/deployments/{{id}}/logs", logs)
    app.router.add_get(f"{PREFIX}/clusters/{{name}}", cluster)
    app.router.add_get(f"{PREFIX}/locks", locks)
