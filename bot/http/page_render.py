"""The web page's HTML: the layout, the front page (deployments and clusters) and a
cluster's grid of hosts. Pure functions from records to text; no I/O.

Everything that came from a design, a worker, a chat line or the store passes through
``Text`` — scrubbed of every known secret, then HTML-escaped (quotes too, so it is
safe in an attribute) — and nothing else reaches the page: a hostname, a step's error
or a clipboard value written to inject markup shows as the characters it is. The
pages also carry a Content-Security-Policy that forbids inline scripts and styles
(``bot.http.page``), a second net should an escape ever be missed.

Every page is whole without JavaScript (tables, a grid, bars drawn at the time of the
request); ``static/page.js`` only keeps it current from the event stream.
"""
from __future__ import annotations

import html
import time
from urllib.parse import quote

from bot import report
from clipboard import redact
from clipboard.records import (
    STOPPED,
    SUCCEEDED,
    UNDER_WAY,
    Deployment,
    EventKind,
    State,
    attention_rank,
)

# Every kind of event the page listens for (an SSE frame names its kind as its event type).
EVENT_KINDS = " ".join(kind.value for kind in EventKind)


class Text:
    """A value made safe for a page: scrubbed of every known secret, then escaped."""

    def __init__(self, scrubber: redact.Scrubber) -> None:
        self.scrubber = scrubber

    def __call__(self, value: object) -> str:
        return html.escape(self.scrubber.scrub(str(value)), quote=True)


def slug(state: str) -> str:
    """A state as a CSS class word: ``rolled back`` → ``state-rolled-back``."""
    return "state-" + "-".join(state.split())


def clock(at: float | None) -> str:
    if at is None:
        return ""
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return f'<time datetime="{iso}">{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))}</time>'


def deployment_url(deployment_id: int) -> str:
    return f"/deployments/{deployment_id}"


def cluster_url(cluster: str) -> str:
    """A cluster run's page; its ``#`` (``shop#2``) percent-encoded, as every other byte
    a URL path may not carry."""
    return "/clusters/" + quote(cluster, safe="")


def layout(t: Text, title: str, body: str, events: str | None = None) -> str:
    """The page around ``body``. ``events``: the event stream that keeps it current
    (``data-events``, read by page.js), none for a page that does not change."""
    live = (f' data-events="{html.escape(events, quote=True)}" data-kinds="{EVENT_KINDS}"'
            if events else "")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{t(title)} · jarvis</title>"
            "<link rel=\"stylesheet\" href=\"/static/page.css\">"
            "<script src=\"/static/page.js\" defer></script></head>\n"
            "<body><header><a class=\"home\" href=\"/\">jarvis</a>"
            "<span class=\"live\" id=\"live\" hidden>live</span></header>\n"
            f"<main{live}>\n{body}\n</main></body></html>\n")


def progress(d: Deployment) -> str:
    """``3/10 ssh:wait`` while it runs; where it stopped once it stopped short."""
    total = len(d.steps)
    if d.state in SUCCEEDED:
        return f"{total}/{total}"
    if d.state in (State.QUEUED, State.AWAITING_APPROVAL, State.APPROVAL_EXPIRED):
        return f"0/{total}"
    at = f"{d.current_step}/{total} {d.step_name(d.current_step) or ''}".strip()
    return f"stopped at {at}" if d.state in STOPPED else at


def bar(done: int, total: int) -> str:
    return f'<progress max="{max(total, 1)}" value="{min(done, total)}"></progress>'


def steps_done(d: Deployment) -> int:
    """Steps it finished: all once it succeeded, else those before the current one (the
    one running, or the one it stopped at)."""
    if d.state in SUCCEEDED:
        return len(d.steps)
    return max(d.current_step - 1, 0)


def deployment_rows(t: Text, deployments: list[Deployment]) -> str:
    rows = []
    for d in deployments:
        cluster = (f'<a href="{t(cluster_url(d.cluster))}">{t(d.cluster)}</a>'
                   if d.cluster else "")
        rows.append(
            f'<tr id="d{d.id}" class="{slug(d.state)}">'
            f'<td><a href="{deployment_url(d.id)}">#{d.id}</a></td>'
            f"<td>{t(d.hostname)}</td><td>{cluster}</td><td>{t(d.pipeline)}</td>"
            f'<td class="state">{t(d.state)}</td>'
            f"<td>{bar(steps_done(d), len(d.steps))} {t(progress(d))}</td>"
            f"<td>{clock(d.created_at)}</td></tr>")
    return "\n".join(rows)


def index(t: Text, deployments: list[Deployment], older: int | None,
          clusters: list[tuple[str, dict[str, int]]], live: bool) -> str:
    """The front page: the newest deployments and cluster runs. ``older``: the id to
    page back from (a plain link, so paging needs no script); ``live``: the newest page,
    kept current (an older page stays as it was read)."""
    more = f'<p class="more"><a href="/?before={older}">older deployments</a></p>' \
        if older is not None else ""
    table = (
        '<table class="deployments"><thead><tr><th>#</th><th>host</th><th>cluster</th>'
        "<th>pipeline</th><th>state</th><th>progress</th><th>created (UTC)</th></tr></thead>"
        f"<tbody>\n{deployment_rows(t, deployments)}\n</tbody></table>"
        if deployments else '<p class="empty">No deployment yet.</p>')
    body = (f'<h1>Deployments</h1>\n<section id="deployments" data-live>\n{table}\n{more}'
            f'</section>\n<h2>Clusters</h2>\n<section id="clusters" data-live>\n'
            f"{cluster_rows(t, clusters)}\n</section>")
    return layout(t, "deployments", body, events="/api/v1/events" if live else None)


def cluster_rows(t: Text, clusters: list[tuple[str, dict[str, int]]]) -> str:
    if not clusters:
        return '<p class="empty">No cluster yet.</p>'
    rows = []
    for name, counts in clusters:
        total = sum(counts.values())
        attention = " attention" if any(counts.get(s) for s in STOPPED) else ""
        rows.append(f'<tr class="cluster{attention}"><td><a href="{t(cluster_url(name))}">'
                    f"{t(name)}</a></td><td>{total}</td>"
                    f"<td>{bar(counts.get(State.READY, 0), total)} "
                    f"{t(report.counts_line(counts, total))}</td></tr>")
    return ('<table class="clusters"><thead><tr><th>cluster</th><th>hosts</th><th>states</th>'
            "</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>")


def grid_order(d: Deployment) -> tuple[int, int, str]:
    """Failed hosts first (worst first, as ``status`` lists them), then those under
    way, then those waiting, then those done; by hostname within each."""
    if d.state in STOPPED:
        return 0, attention_rank(d.state), d.hostname
    if d.state in UNDER_WAY:
        return 1, 0, d.hostname
    if d.state in SUCCEEDED:
        return 3, 0, d.hostname
    return 2, 0, d.hostname


def cluster(t: Text, name: str, deployments: list[Deployment]) -> str:
    """A cluster run: its counts, then one cell per host coloured by state."""
    counts: dict[str, int] = {}
    for d in deployments:
        counts[d.state] = counts.get(d.state, 0) + 1
    cells = []
    for d in sorted(deployments, key=grid_order):
        why = f'<span class="why">{t(d.error)}</span>' if d.error and d.state in STOPPED else ""
        cells.append(f'<li class="host {slug(d.state)}" data-host="{t(d.hostname)}">'
                     f'<a href="{deployment_url(d.id)}"><b>{t(d.hostname)}</b>'
                     f'<span class="state">{t(d.state)}</span>'
                     f'<span class="step">{t(progress(d))}</span>{why}</a></li>')
    body = (f"<h1>Cluster {t(name)}</h1>\n<section id=\"grid\" data-live>\n"
            f'<p class="counts">{t(report.counts_line(counts, len(deployments)))}</p>\n'
            f'<ol class="grid">\n' + "\n".join(cells) + "\n</ol>\n</section>")
    return layout(t, f"cluster {name}", body, events="/api/v1/events?cluster=" + quote(name,
                                                                                       safe=""))


def missing(t: Text, what: str) -> str:
    return layout(t, "not found", f'<h1>Not found</h1>\n<p class="empty">{t(what)}</p>')
