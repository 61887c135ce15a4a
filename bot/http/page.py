"""The web page: ``/`` (deployments and clusters), ``/deployments/<id>`` (a timeline
and each step's logs, diff and clipboard) and ``/clusters/<name>`` (a grid of hosts).

Server-rendered from the store on every request, so a page is whole without
JavaScript and shows exactly what the store holds; ``static/page.js`` (plain, no build
step, nothing fetched from elsewhere) keeps it current from the event stream
(``/api/v1/events``) without a reload. What a step left is told in chat's own words:
the answers of ``bot.inspection`` (``logs``, ``diff``, ``clipboard``), redacted and
scrubbed there, read here from one look at the store per page. Every value is
escaped on its way out (``bot.http.page_render.Text``), and the pages forbid inline
script and style, so nothing a design or a worker wrote can run in a browser.

Reads follow ``http.read`` like the JSON API (``check_read``). The front page's two
lists are small queries of this module's own, run on the store's reader thread
(``Store._read``) like every other read, so the loop never touches SQLite.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable
from pathlib import Path

from aiohttp import web

from bot.http import page_render as render
from bot.http import page_timeline as timeline
from bot.http.requests import check_read, context, is_number
from bot.inspection import Inspection, Looked
from clipboard import redact
from clipboard.errors import JarvisError
from clipboard.records import Deployment, StepKind, StepRecord
from clipboard.store_rows import deployment_from

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50
CLUSTERS_SHOWN = 20
LARGEST_ID = 1 << 62  # beyond SQLite's integers: no such deployment
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get(r"/deployments/{id:\d+}", deployment)
    app.router.add_get("/clusters/{name}", cluster)
    app.router.add_static("/static/", STATIC)


def html_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "no-referrer"})


def text_for(request: web.Request, secrets: set[str] | None = None) -> render.Text:
    scrubber = redact.Scrubber(context(request).config.secrets)
    scrubber.add(secrets or ())
    return render.Text(scrubber)


# -- the front page --------------------------------------------------------------------------
def recent(c: sqlite3.Connection, before: int | None, limit: int) -> list[Deployment]:
    """The newest ``limit`` deployments below id ``before`` (all when None), newest first."""
    below = LARGEST_ID if before is None else min(before, LARGEST_ID)
    rows = c.execute("SELECT * FROM deployments WHERE id < ? ORDER BY id DESC LIMIT ?",
                     (below, limit)).fetchall()
    return [deployment_from(row) for row in rows]


def clusters(c: sqlite3.Connection, limit: int) -> list[tuple[str, dict[str, int]]]:
    """The newest ``limit`` cluster runs, newest first, with their hosts counted by state."""
    rows = c.execute(
        "SELECT d.cluster, d.state, count(*) FROM deployments AS d JOIN (SELECT cluster,"
        " max(id) AS newest FROM deployments WHERE cluster IS NOT NULL GROUP BY cluster"
        " ORDER BY newest DESC LIMIT ?) AS runs ON d.cluster = runs.cluster"
        " GROUP BY d.cluster, d.state ORDER BY runs.newest DESC", (limit,)).fetchall()
    found: dict[str, dict[str, int]] = {}
    for name, state, count in rows:
        found.setdefault(name, {})[state] = count
    return list(found.items())


async def index(request: web.Request) -> web.Response:
    check_read(request)
    store = context(request).store
    before_text = request.query.get("before")
    if before_text is not None and not is_number(before_text):
        raise JarvisError(f"before is a deployment number, not {before_text[:20]!r}")
    before = int(before_text) if before_text is not None else None
    found = await store._read(lambda c: recent(c, before, PAGE_SIZE + 1))
    older = found[PAGE_SIZE - 1].id if len(found) > PAGE_SIZE else None
    runs = await store._read(lambda c: clusters(c, CLUSTERS_SHOWN))
    return html_response(render.index(text_for(request), found[:PAGE_SIZE], older, runs,
                                      live=before is None))


# -- a cluster -------------------------------------------------------------------------------
async def cluster(request: web.Request) -> web.Response:
    check_read(request)
    store = context(request).store
    name = request.match_info["name"]
    run = await store.latest_cluster(name)
    if run is None:
        return html_response(render.missing(text_for(request), f"no cluster {name}"), 404)
    return html_response(render.cluster(text_for(request), run, await store.by_cluster(run)))


# -- a deployment ----------------------------------------------------------------------------
class OneDeployment(Inspection):
    """``bot.inspection``'s answers about one deployment already read from the store:
    a page asks three questions per step, and reading every clipboard (for the secrets
    to scrub) once per question would read them dozens of times."""

    def __init__(self, inspection: Inspection, looked: Looked) -> None:
        super().__init__(inspection.store, inspection.keys)
        self.looked = looked

    async def _look(self, host: str, ref: str | None) -> Looked:
        return self.looked


async def said(answer: Awaitable[list[str]]) -> list[str]:
    """An answer's lines, or the one line saying why there is none (no clipboard kept,
    no log): on the page that is information, not an error."""
    try:
        return await answer
    except JarvisError as exc:
        return [str(exc)]


def word_of(record: StepRecord) -> str:
    """How ``bot.inspection`` names a step run: ``3``, or ``3.undo``."""
    return str(record.idx) if record.kind == StepKind.STEP else f"{record.idx}.undo"


async def step_views(inspection: OneDeployment) -> list[timeline.StepView]:
    """Each step and undo the deployment ran (its latest run, as chat's commands take
    it), after the design as fetched."""
    looked = inspection.looked
    d = looked.deployment
    host, ref = d.hostname, f"#{d.id}"
    views = []
    if any(v.after_step == 0 for v in looked.versions):
        views.append(timeline.StepView("0", "0 the design as fetched", "fetched", None, [],
                                       [], await said(inspection.clipboard(host, ["0", ref]))))
    latest: dict[str, StepRecord] = {}
    for record in looked.records:
        latest[word_of(record)] = record
    for word, r in latest.items():
        title = (f"{r.idx} {r.name}" if r.kind == StepKind.STEP
                 else f"undo of step {r.idx}: {r.name}")
        seconds = (r.finished_at - r.started_at
                   if r.finished_at is not None and r.started_at is not None else None)
        views.append(timeline.StepView(
            word, title, r.state, seconds, await said(inspection.logs(host, [word, ref])),
            await said(inspection.diff(host, [word, ref])),
            await said(inspection.clipboard(host, [word, ref]))))
    return views


async def deployment(request: web.Request) -> web.Response:
    check_read(request)
    ctx = context(request)
    store = ctx.store
    number = int(request.match_info["id"])
    d = await store.deployment(number) if number < LARGEST_ID else None
    if d is None:
        return html_response(render.missing(text_for(request), f"no deployment #{number}"), 404)
    inspection = ctx.commands.inspection
    records = await store.steps(d.id)
    looked = Looked(d, records, await store.clipboard_versions(d.id),
                    await store.secret_values(d.id, inspection.keys))
    views = await step_views(OneDeployment(inspection, looked))
    log.debug("page of #%d: %d step runs", d.id, len(records))
    return html_response(timeline.deployment(text_for(request, looked.secrets), d, records,
                                             views, time.time()))
