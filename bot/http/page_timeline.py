"""A deployment's page: what it is, a timeline of its steps, and each step's logs, diff
and clipboard. Pure functions from records to HTML (``bot.http.page`` reads them).

The timeline is one row per step run, each with a bar on a shared time axis: an undo
is a bar of its own colour, a running step's bar ends at the time of the request.
The bars are SVG rectangles placed in percent of the axis, so they need no inline
style (the page's Content-Security-Policy allows none); ``static/page.js`` moves them
as time passes and adds rows from the event stream, reading the times each row
carries in ``data-start``/``data-end`` (seconds since the epoch, the server's clock,
which the page also carries as ``data-now`` so a skewed browser clock does not bend
the axis).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bot import report
from bot.http.page_render import Text, clock, cluster_url, layout, slug
from clipboard.records import ACTIVE, Deployment, StepKind, StepRecord, StepState

# The shortest bar drawn, in percent of the axis: a step of a millisecond still shows.
MIN_WIDTH = 0.4
TICKS = 6


@dataclass
class StepView:
    """One step (or undo) as the page shows it below the timeline: what chat's
    ``logs``, ``diff`` and ``clipboard`` would answer about it (already redacted and
    scrubbed by ``bot.inspection``), or why there is nothing."""

    word: str
    title: str
    state: str
    seconds: float | None
    logs: list[str]
    diff: list[str]
    clipboard: list[str]


def pct(fraction: float) -> str:
    return f"{max(fraction, 0.0) * 100:.3f}%"


def seconds_text(seconds: float) -> str:
    """A tick or a bar's length: ``5ms``, ``0.5s``, ``12s``, ``3m05s`` (page.js says
    the same)."""
    if seconds <= 0:
        return "0s"
    if seconds < 0.1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def tick_step(span: float) -> float:
    """A round interval (1, 2 or 5 times a power of ten seconds) giving at most
    ``TICKS`` ticks over ``span``."""
    magnitude = 10.0 ** math.floor(math.log10(span / TICKS))
    return next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude * TICKS >= span)


def axis(span: float) -> str:
    step = tick_step(span)
    marks = []
    at = 0.0
    while at <= span + 1e-9:
        x = pct(at / span)
        anchor = "start" if at == 0 else "middle"
        marks.append(f'<line x1="{x}" x2="{x}" y1="14" y2="20"></line>'
                     f'<text x="{x}" y="11" text-anchor="{anchor}">{seconds_text(at)}</text>')
        at += step
    return ('<div class="row axis"><span class="label">time</span>'
            f'<svg class="track" aria-hidden="true">{"".join(marks)}</svg>'
            '<span class="secs"></span></div>')


def bounds(d: Deployment, records: list[StepRecord], now: float) -> tuple[float, float | None,
                                                                             float]:
    """The axis: where it starts, where it ends (None while the deployment is active:
    now, moving) and its length in seconds."""
    starts = [r.started_at for r in records if r.started_at is not None]
    t0 = min(starts) if starts else (d.started_at or d.created_at)
    ends = [r.finished_at for r in records if r.finished_at is not None]
    end = None if d.state in ACTIVE else max([d.finished_at or t0, *ends])
    running = any(r.finished_at is None for r in records)
    last = now if end is None or running else end
    return t0, end, max(last - t0, 0.001)


def row(t: Text, r: StepRecord, t0: float, span: float, now: float) -> str:
    start = r.started_at if r.started_at is not None else t0
    finish = r.finished_at if r.finished_at is not None else now
    width = max((finish - start) / span * 100, MIN_WIDTH) / 100
    label = f"{r.idx} {r.name}" if r.kind == StepKind.STEP else f"undo {r.name}"
    if r.attempt > 1:
        label += f" (attempt {r.attempt})"
    end = f' data-end="{r.finished_at:.3f}"' if r.finished_at is not None else ""
    state = StepState.RUNNING if r.finished_at is None else r.state
    error = f"<title>{t(r.error)}</title>" if r.error else ""
    took = seconds_text(finish - start) + ("…" if r.finished_at is None else "")
    return (f'<div class="row {t(r.kind)}" data-kind="{t(r.kind)}" data-name="{t(r.name)}" '
            f'data-start="{start:.3f}"{end}><span class="label">{t(label)}</span>'
            f'<svg class="track"><rect class="bar {t(r.kind)} {t(state)}" '
            f'x="{pct((start - t0) / span)}" y="2" width="{pct(width)}" height="14">{error}'
            "</rect></svg>"
            f'<span class="secs">{took}</span></div>')


def timeline(t: Text, d: Deployment, records: list[StepRecord], now: float) -> str:
    t0, end, span = bounds(d, records, now)
    rows = "\n".join(row(t, r, t0, span, now) for r in records)
    ended = f' data-end="{end:.3f}"' if end is not None else ""
    empty = "" if records else '<p class="empty">No step has started yet.</p>'
    return (f'<div id="timeline" class="timeline" data-deployment="{d.id}" '
            f'data-t0="{t0:.3f}"{ended} data-now="{now:.3f}" data-total="{len(d.steps)}">\n'
            f"{axis(span)}\n<div class=\"rows\">\n{rows}\n</div>{empty}</div>")


def pane(t: Text, title: str, lines: list[str]) -> str:
    if not lines:
        return ""
    return f"<h3>{title}</h3><pre>{t(chr(10).join(lines))}</pre>"


def step_views(t: Text, views: list[StepView]) -> str:
    if not views:
        return '<p class="empty">No step has run yet.</p>'
    items = []
    for v in views:
        took = f", {report.duration(v.seconds)}" if v.seconds is not None else ""
        items.append(f'<details id="step-{t(v.word)}" class="{slug(v.state)}"><summary>'
                     f'{t(v.title)} <span class="state">{t(v.state)}{took}</span></summary>'
                     f'{pane(t, "logs", v.logs)}{pane(t, "diff", v.diff)}'
                     f'{pane(t, "clipboard", v.clipboard)}</details>')
    return "\n".join(items)


def facts(t: Text, d: Deployment, records: list[StepRecord]) -> str:
    lines = report.status_lines(d, records)
    cluster = (f'<dt>cluster</dt><dd><a href="{t(cluster_url(d.cluster))}">{t(d.cluster)}</a>'
               "</dd>" if d.cluster else "")
    source = f"{d.source_kind or 'file'} {d.source}"
    return (f'<p class="headline {slug(d.state)}">{t(lines[0])}</p>\n'
            + "".join(f'<p class="more-status">{t(line)}</p>' for line in lines[1:])
            + f'\n<dl class="facts"><dt>state</dt><dd class="{slug(d.state)}">{t(d.state)}</dd>'
            f"<dt>pipeline</dt><dd>{t(d.pipeline)} ({len(d.steps)} steps)</dd>{cluster}"
            f"<dt>requested by</dt><dd>{t(d.requester or '?')}</dd>"
            f"<dt>source</dt><dd>{t(source)}</dd>"
            f"<dt>created</dt><dd>{clock(d.created_at)}</dd>"
            f"<dt>finished</dt><dd>{clock(d.finished_at) or '—'}</dd></dl>")


def deployment(t: Text, d: Deployment, records: list[StepRecord], views: list[StepView],
               now: float) -> str:
    shown = report.current_attempt(d, records)
    body = (f"<h1>#{d.id} {t(d.hostname)}</h1>\n"
            f'<section id="facts" data-live>\n{facts(t, d, records)}\n</section>\n'
            f"<h2>Timeline</h2>\n{timeline(t, d, shown, now)}\n"
            f'<h2>Steps</h2>\n<section id="steps" data-live>\n{step_views(t, views)}\n'
            "</section>")
    return layout(t, f"#{d.id} {d.hostname}", body,
                  events=f"/api/v1/events?deployment={d.id}")
