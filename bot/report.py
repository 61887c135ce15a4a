"""How deployments read in chat and on the terminal: one line each, secrets redacted.

    loki: running step 5/12 ssh:wait (14s)
    loki: FAILED at step 7/12 dnswizard:update_host after 3s: <reason>
    loki: ready in 2m13s (12 steps)
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from clipboard import document, redact
from clipboard.approval import Approval, clock
from clipboard.records import (
    STOPPED,
    UNDONE,
    Deployment,
    Event,
    EventKind,
    State,
    StepKind,
    StepRecord,
    StepState,
    Summary,
    summarize,
)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s" if seconds >= 0.1 else f"{seconds * 1000:.0f}ms"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def headline(deployment: Deployment, steps: list[StepRecord], now: float | None = None) -> str:
    """The one line that says where a deployment is, in words that say what happened."""
    now = time.time() if now is None else now
    d, total, host = deployment, len(deployment.steps), deployment.hostname
    steps = current_attempt(d, steps)
    if d.state == State.QUEUED:
        return f"{host}: queued (#{d.id}, {total} steps)"
    approval = Approval.of(d.meta)
    if approval is not None and d.state in (State.AWAITING_APPROVAL, State.APPROVAL_EXPIRED):
        if d.state == State.APPROVAL_EXPIRED or approval.expired(now):
            return (f"{host}: approval expired: deployment #{d.id} forced by "
                    f"{approval.requested_by} was not approved by {clock(approval.until)}; "
                    "nothing ran")
        return (f"{host}: awaiting approval: deployment #{d.id} ({total} steps) forced by "
                f"{approval.requested_by}; someone else may say 'approve {host}' until "
                f"{clock(approval.until)}")
    if approval is not None and approval.approved_by is None and d.state == State.CANCELLED:
        return (f"{host}: cancelled by {d.meta.get('cancelled_by') or 'someone'} while "
                f"deployment #{d.id} awaited approval (forced by {approval.requested_by}); "
                "nothing ran")
    if d.state == State.RUNNING:
        current = next((s for s in reversed(steps)
                        if s.kind == StepKind.STEP and s.state == StepState.RUNNING), None)
        if current is not None and current.started_at is not None:
            on = f" on {current.worker}" if current.worker else ""
            return (f"{host}: running step {current.idx}/{total} {current.name} "
                    f"({duration(now - current.started_at)}){on}")
        return f"{host}: running step {d.current_step}/{total} {d.step_name(d.current_step) or '?'}"
    if d.state in (State.READY, State.DECOMMISSIONED):
        took = (d.finished_at or now) - (d.started_at or d.created_at)
        return f"{host}: {d.state} in {duration(took)} ({total} steps)"
    if d.state in (State.CANCELLED, State.FAILED):
        return f"{host}: {_stopped_at(d, steps, now)}"
    queue = len((d.meta.get("rollback") or {}).get("queue") or [])
    undone = d.meta.get("rolled_back") or []
    if d.state == State.ROLLING_BACK:
        return (f"{host}: rolling back ({len(undone)}/{queue} undos done) after "
                f"{_stopped_at(d, steps, now)}")
    if d.state == State.ROLLED_BACK:
        return f"{host}: rolled back ({queue} undos) after {_stopped_at(d, steps, now)}"
    if d.state == State.ROLLBACK_FAILED:
        failed = [u["undo"] for u in undone if not u["ok"]]
        return (f"{host}: rollback FAILED ({', '.join(failed)}) after "
                f"{_stopped_at(d, steps, now)}")
    return f"{host}: {d.state}"


def _stopped_at(d: Deployment, steps: list[StepRecord], now: float) -> str:
    """``FAILED at step 8/15 dnswizard:update_host after 3s: <reason>`` or
    ``cancelled at step 5/15 ssh:wait by <who>``: why a deployment stopped short."""
    total = len(d.steps)
    if d.state == State.CANCELLED or (d.meta.get("rollback") or {}).get("cause") == State.CANCELLED:
        by = d.meta.get("cancelled_by")
        return (f"cancelled at step {d.current_step}/{total} "
                f"{d.step_name(d.current_step) or '?'}" + (f" by {by}" if by else ""))
    failed = next((s for s in reversed(steps)
                   if s.kind == StepKind.STEP and s.state == StepState.FAILED), None)
    if failed is None:
        return f"FAILED: {d.error}"
    took = (failed.finished_at or now) - (failed.started_at or now)
    return (f"FAILED at step {failed.idx}/{total} {failed.name} after {duration(took)}: "
            f"{d.error}")


def current_attempt(d: Deployment, steps: list[StepRecord]) -> list[StepRecord]:
    """The step records that tell the current attempt: since the last attempt that
    started from step 1; a step run again by a retry from a later step shows once."""
    base = 1
    for attempt in d.meta.get("attempts") or []:
        if attempt.get("from_step") == 1:
            base = int(attempt["attempt"]) + 1
    latest: dict[int, int] = {}
    kept = [s for s in steps if s.attempt >= base]
    for position, s in enumerate(kept):
        if s.kind == StepKind.STEP:
            latest[s.idx] = position
    return [s for position, s in enumerate(kept)
            if s.kind != StepKind.STEP or latest[s.idx] == position]


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
        mark = "" if s.state == StepState.OK else (
            " FAILED" if s.state == StepState.FAILED else f" {s.state}")
        prefix = "undo " if s.kind == StepKind.UNDO else ""
        on = f" on {s.worker}" if s.worker else ""
        parts.append(f"{s.idx}.{prefix}{s.name} {took}{mark}{on}")
    return "steps: " + ", ".join(parts) if parts else None


def status_lines(deployment: Deployment, steps: list[StepRecord]) -> list[str]:
    lines = [headline(deployment, steps)]
    for extra in (rollback_line(deployment),
                  timings_line(current_attempt(deployment, steps))):
        if extra:
            lines.append(extra)
    return lines


def awaiting_line(d: Deployment) -> str:
    """The answer to ``deploy … force``: recorded, waiting, for whom and until when."""
    approval = Approval.of(d.meta)
    assert approval is not None
    return (f"{d.hostname}: deployment #{d.id} forced by {approval.requested_by} awaits "
            f"approval: nothing runs until someone else says 'approve {d.hostname}' "
            f"(by {clock(approval.until)}); 'cancel {d.hostname}' drops it")


def _forced(d: Deployment) -> str | None:
    """``forced, approved by <who> at <when>`` (or why it never ran) for ``history``."""
    approval = Approval.of(d.meta)
    if approval is None:
        return None
    if approval.approved_by is not None:
        at = time.strftime("%H:%M:%S", time.localtime(approval.approved_at or 0))
        return f"forced, approved by {approval.approved_by} at {at}"
    if d.state == State.AWAITING_APPROVAL:
        return f"forced, awaiting approval until {clock(approval.until)}"
    return "forced, never approved"


def history_line(d: Deployment, workers: list[str] | None = None) -> str:
    """One deployment: when, how it ended, who asked, from where; each earlier attempt
    (how it ended, who retried it), who cancelled, and the Celery workers that ran it."""
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
    rolled_back = d.meta.get("rolled_back")
    extra = [_undone(rolled_back)] if rolled_back else []
    forced = _forced(d)
    if forced:
        extra.insert(0, forced)
    if d.meta.get("cancelled_by"):
        extra.append(f"cancelled by {d.meta['cancelled_by']}")
    for attempt in d.meta.get("attempts") or []:
        ended = f"attempt {attempt['attempt']} {attempt['ended']}"
        if attempt.get("cancelled_by"):
            ended += f" (cancelled by {attempt['cancelled_by']})"
        if attempt.get("rolled_back"):
            ended += f" ({_undone(attempt['rolled_back'])})"
        extra.append(f"{ended}, retried by {attempt.get('retried_by') or 'someone'} from "
                     f"step {attempt['from_step']}")
    if workers:
        extra.append("on " + ", ".join(workers))
    tail = "".join(f"; {part}" for part in extra)
    return f"#{d.id} {when} {d.state}{took}, pipeline {d.pipeline}{who}{source}{tail}"


def _undone(undone: list[dict[str, Any]]) -> str:
    return "rolled back: " + ", ".join(
        f"{u['undo']} {'ok' if u['ok'] else 'FAILED'}" for u in undone)


def clipboard_text(clipboard: dict[str, Any], keys: Iterable[str]) -> str:
    return document.dump(redact.redact(clipboard, keys)).rstrip()


def event_line(event: Event, verbose: bool) -> str | None:
    """The announcement for an event, or None when it is not worth a line."""
    d, host, kind = event.deployment, event.deployment.hostname, event.kind
    if kind == EventKind.STEP_STARTED:
        return f"{host}: step {event.index}/{event.total} {event.step}" if verbose else None
    if kind in (EventKind.STEP_OK, EventKind.STEP_FAILED, EventKind.ACCEPTED,
                EventKind.RETRIED):
        return None  # the deployment's end, or the command's own reply, says it once
    rolling = " — rolling back" if d.state == State.ROLLING_BACK else ""
    if kind == EventKind.RESUMED:
        what = "the rollback of " if d.state == State.ROLLING_BACK else ""
        return (f"{host}: taking up {what}deployment #{d.id} at step "
                f"{event.index}/{event.total}")
    if kind == EventKind.APPROVED:
        approval = Approval.of(d.meta)
        by = approval.approved_by if approval else "someone"
        return f"{host}: deployment #{d.id} approved by {by}; starting"
    if kind == EventKind.APPROVAL_EXPIRED:
        return f"{host}: approval of deployment #{d.id} expired; nothing ran"
    if kind == EventKind.FAILED:
        if event.step is None:
            return f"{host}: FAILED: {event.error}{rolling}"
        return (f"{host}: FAILED at step {event.index}/{event.total} {event.step} after "
                f"{duration(event.seconds)}: {event.error}{rolling}")
    if kind in (EventKind.READY, EventKind.DECOMMISSIONED):
        took = (d.finished_at or time.time()) - (d.started_at or d.created_at)
        return f"{host}: {d.state} in {duration(took)} ({event.total} steps)"
    if kind == EventKind.CANCELLED:
        by = d.meta.get("cancelled_by")
        return (f"{host}: cancelled at step {event.index}/{event.total}"
                + (f" by {by}" if by else "") + rolling)
    if kind == EventKind.UNDO_STARTED:
        return f"{host}: undoing step {event.index} with {event.step}" if verbose else None
    if kind == EventKind.UNDO_OK:
        return f"{host}: undid step {event.index} with {event.step} ({duration(event.seconds)})"
    if kind == EventKind.UNDO_FAILED:
        return f"{host}: undo {event.step} of step {event.index} FAILED: {event.error}"
    if kind == EventKind.ROLLED_BACK:
        return f"{host}: rolled back ({len(d.meta.get('rolled_back') or [])} undos)"
    if kind == EventKind.ROLLBACK_FAILED:
        return f"{host}: rollback FAILED: {event.step}: {event.error}"
    return None


# ------------------------------------------------------------------ clusters and filters
# mcollective's lesson: a count, then the hosts that need someone, failures first;
# never one line per host per step.

def counts_line(counts: dict[str, int], total: int) -> str:
    """``14/20 ready, 4 running, 2 failed`` (states with nobody in them left out)."""
    parts = [f"{counts.get(State.READY, 0)}/{total} ready"]
    for state in State:
        if state != State.READY and counts.get(state):
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
    if d.state == State.CANCELLED or (d.meta.get("rollback") or {}).get("cause") == State.CANCELLED:
        undone = f" ({d.state})" if d.state in UNDONE else ""
        return f"{d.hostname} cancelled{where}{undone}"
    if d.state in STOPPED:
        reason = f": {d.error}" if d.error else ""
        undone = f" ({d.state})" if d.state in UNDONE else ""
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
        lines.append(f"… and {summary.stuck - len(summary.attention)} more that stopped short")
    if summary.running:
        lines.append("running: " + "; ".join(
            f"{count} at step {index}/{total} {step or '?'} ({_names(hosts, count)})"
            for index, total, step, count, hosts in summary.running))
    queued = summary.counts.get(State.QUEUED, 0)
    if queued:
        lines.append(f"queued: {queued} ({_names(summary.queued, queued)})")
    return lines
