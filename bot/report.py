"""How deployments read in chat and on the terminal: one line each, secrets redacted.

    loki: running step 5/12 ssh:wait (14s)
    loki: FAILED at step 7/12 dnswizard:update_host after 3s: <reason>
    loki: ready in 2m13s (12 steps)
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from clipboard import document, redact
from clipboard.engine import Event
from clipboard.store import Deployment, StepRecord, Summary, summarize


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s" if seconds >= 0.1 else f"{seconds * 1000:.0f}ms"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def headline(deployment: Deployment, steps: list[StepRecord], now: float | None = None) -> str:
    """The one line that says where a deployment is."""
    now = time.time() if now is None else now
    d, total, host = deployment, len(deployment.steps), deployment.hostname
    if d.state == "queued":
        return f"{host}: queued (#{d.id}, {total} steps)"
    if d.state == "running":
        current = next((s for s in reversed(steps) if s.kind == "step" and s.state == "running"),
                       None)
        if current is not None and current.started_at is not None:
            return (f"{host}: running step {current.idx}/{total} {current.name} "
                    f"({duration(now - current.started_at)})")
        return f"{host}: running step {d.current_step}/{total} {d.step_name(d.current_step) or '?'}"
    if d.state == "ready":
        took = (d.finished_at or now) - (d.started_at or d.created_at)
        return f"{host}: ready in {duration(took)} ({total} steps)"
    if d.state == "failed":
        failed = next((s for s in reversed(steps) if s.kind == "step" and s.state == "failed"), None)
        if failed is None:
            return f"{host}: FAILED: {d.error}"
        took = (failed.finished_at or now) - (failed.started_at or now)
        return (f"{host}: FAILED at step {failed.idx}/{total} {failed.name} after "
                f"{duration(took)}: {d.error}")
    if d.state == "cancelled":
        return f"{host}: cancelled at step {d.current_step}/{total} {d.step_name(d.current_step) or '?'}"
    return f"{host}: {d.state}"


def rollback_line(deployment: Deployment) -> str | None:
    undone = deployment.meta.get("rolled_back")
    if not undone:
        return None
    parts = [f"{u['undo']} ok" if u["ok"] else f"{u['undo']} FAILED: {u['error']}" for u in undone]
    return f"{deployment.hostname}: rolled back: " + "; ".join(parts)


def timings_line(steps: list[StepRecord]) -> str | None:
    parts = []
    for s in steps:
        took = duration(s.finished_at - s.started_at) if s.finished_at and s.started_at else "…"
        mark = {"ok": "", "running": " running", "failed": " FAILED",
                "cancelled": " cancelled", "interrupted": " interrupted"}.get(s.state, f" {s.state}")
        prefix = "undo " if s.kind == "undo" else ""
        parts.append(f"{s.idx}.{prefix}{s.name} {took}{mark}")
    return "steps: " + ", ".join(parts) if parts else None


def status_lines(deployment: Deployment, steps: list[StepRecord]) -> list[str]:
    lines = [headline(deployment, steps)]
    for extra in (rollback_line(deployment), timings_line(steps)):
        if extra:
            lines.append(extra)
    return lines


def history_line(d: Deployment) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.created_at))
    took = ""
    if d.finished_at:
        took = f" in {duration(d.finished_at - (d.started_at or d.created_at))}"
    who = f" by {d.requester}" if d.requester else ""
    source = f" from {d.source_kind or 'file'} {d.source}"
    if d.source_sha256:
        source += f" sha256:{d.source_sha256[:16]}"
    if d.fetched_at:
        source += f" fetched {time.strftime('%H:%M:%S', time.localtime(d.fetched_at))}"
    undo = ""
    if d.meta.get("rolled_back"):
        undo = " rolled back: " + ", ".join(
            f"{u['undo']} {'ok' if u['ok'] else 'FAILED'}" for u in d.meta["rolled_back"])
    return f"#{d.id} {when} {d.state}{took}, pipeline {d.pipeline}{who}{source}{undo}"


def clipboard_text(clipboard: dict[str, Any], keys: Iterable[str]) -> str:
    return document.dump(redact.redact(clipboard, keys)).rstrip()


def event_line(event: Event, verbose: bool) -> str | None:
    """The announcement for an event, or None when it is not worth a line."""
    d, host = event.deployment, event.deployment.hostname
    kind = event.kind
    if kind == "step.started":
        return f"{host}: step {event.index}/{event.total} {event.step}" if verbose else None
    if kind == "step.ok":
        return None
    if kind == "step.failed":
        return None  # deploy.failed or deploy.cancelled says it, once
    if kind == "deploy.accepted":
        return None  # the command's own reply acknowledges it
    if kind == "deploy.resumed":
        return f"{host}: resuming deployment #{d.id} at step {event.index}/{event.total}"
    if kind == "deploy.failed":
        if event.step is None:
            return f"{host}: FAILED: {event.error}"
        return (f"{host}: FAILED at step {event.index}/{event.total} {event.step} after "
                f"{duration(event.seconds)}: {event.error}")
    if kind == "deploy.ready":
        took = (d.finished_at or time.time()) - (d.started_at or d.created_at)
        return f"{host}: ready in {duration(took)} ({event.total} steps)"
    if kind == "deploy.cancelled":
        return f"{host}: cancelled at step {event.index}/{event.total}"
    if kind == "undo.started":
        return f"{host}: undoing step {event.index} with {event.step}" if verbose else None
    if kind == "undo.ok":
        return f"{host}: undid step {event.index} with {event.step} ({duration(event.seconds)})"
    if kind == "undo.failed":
        return f"{host}: undo {event.step} of step {event.index} FAILED: {event.error}"
    return None


# ------------------------------------------------------------------ clusters and filters
# mcollective's lesson: a count, then the hosts that need someone, failures first;
# never one line per host per step.

def counts_line(counts: dict[str, int], total: int) -> str:
    """``14/20 ready, 4 running, 2 failed`` (states with nobody in them left out)."""
    parts = [f"{counts.get('ready', 0)}/{total} ready"]
    for state in ("running", "queued", "failed", "cancelled"):
        if counts.get(state):
            parts.append(f"{counts[state]} {state}")
    return ", ".join(parts)


def counts_text(deployments: list[Deployment]) -> str:
    summary = summarize(deployments, 0)
    return counts_line(summary.counts, summary.total)


def failure_text(d: Deployment, numbered: bool = False) -> str:
    """``web7 FAILED at dnswizard:update_host: REFUSED`` (or cancelled at ...)."""
    step = (d.step_name(d.current_step) or "?") if d.current_step else None
    where = ""
    if step:
        where = f" at step {d.current_step}/{len(d.steps)} {step}" if numbered else f" at {step}"
    if d.state == "failed":
        reason = f": {d.error}" if d.error else ""
        undone = " (rolled back)" if d.meta.get("rolled_back") else ""
        return f"{d.hostname} FAILED{where}{reason}{undone}"
    return f"{d.hostname} {d.state}{where}"


def summary_line(label: str, deployments: list[Deployment], inline: int = 3) -> str:
    """One line: counts, then the first failures with their step and reason."""
    summary = summarize(deployments, inline)
    line = f"{label}: {counts_line(summary.counts, summary.total)}"
    if summary.attention:
        shown = [failure_text(d) for d in summary.attention]
        more = summary.stuck - inline
        line += " — " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    return line


def _names(hosts: list[str], count: int) -> str:
    return ", ".join(hosts) + (f" +{count - len(hosts)}" if count > len(hosts) else "")


def group_status(label: str, summary: Summary) -> list[str]:
    """A cluster's (or a filter's) status: the counts, one line per failed or cancelled
    host (failures first, as many as the summary holds), then the others grouped by
    where they are."""
    lines = [f"{label}: {counts_line(summary.counts, summary.total)}"]
    lines += [failure_text(d, numbered=True) for d in summary.attention]
    if summary.stuck > len(summary.attention):
        lines.append(f"… and {summary.stuck - len(summary.attention)} more failed or cancelled")
    if summary.running:
        lines.append("running: " + "; ".join(
            f"{count} at step {index}/{total} {step or '?'} ({_names(hosts, count)})"
            for index, total, step, count, hosts in summary.running))
    queued = summary.counts.get("queued", 0)
    if queued:
        lines.append(f"queued: {queued} ({_names(summary.queued, queued)})")
    return lines
