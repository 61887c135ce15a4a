"""The JSON the API answers with: deployments, step runs, locks and cluster summaries
made from the store's records, and every string of an answer scrubbed.

One place decides what of a record leaves jarvis. A deployment's ``reply_to`` (the chat
room and nick it answers in) and its owner's process token stay inside; its labels
never hold a secret (``clipboard.cluster.labels_of`` leaves secret names out) and
its errors were scrubbed before they were stored. ``scrubbed`` is the last net, as
``Scrubber.lines`` is for chat: every string of every answer passes it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clipboard.approval import Approval
from clipboard.records import Deployment, Lock, StepRecord, Summary


def deployment(d: Deployment) -> dict[str, Any]:
    """A deployment as ``GET /api/v1/deployments/<id>`` shows it."""
    approval = Approval.of(d.meta)
    return {
        "id": d.id, "hostname": d.hostname, "cluster": d.cluster, "state": str(d.state),
        "pipeline": d.pipeline, "steps": [s.name for s in d.steps],
        "current_step": d.current_step, "total": len(d.steps), "attempt": d.attempt,
        "rollback": d.rollback, "error": d.error, "requester": d.requester,
        "source": d.source, "source_kind": d.source_kind, "source_sha256": d.source_sha256,
        "created_at": d.created_at, "started_at": d.started_at, "finished_at": d.finished_at,
        "labels": d.meta.get("labels") or {},
        "driver": d.owner.describe() if d.owner is not None else None,
        "approval": None if approval is None else {
            "requested_by": approval.requested_by, "until": approval.until,
            "approved_by": approval.approved_by, "approved_at": approval.approved_at},
        "links": links(d.id),
    }


def links(deployment_id: int) -> dict[str, str]:
    base = f"/api/v1/deployments/{deployment_id}"
    return {"self": base, "steps": f"{base}/steps", "clipboard": f"{base}/clipboard",
            "logs": f"{base}/logs"}


def step(r: StepRecord) -> dict[str, Any]:
    """A step run or an undo. ``index`` is the step's number in its pipeline as chat
    says it (``logs web1 3``): 1 is the first step; an undo carries the number of the
    step it undoes."""
    seconds = (round(r.finished_at - r.started_at, 3)
               if r.finished_at is not None and r.started_at is not None else None)
    return {"index": r.idx, "name": r.name, "kind": str(r.kind), "state": str(r.state),
            "started_at": r.started_at, "finished_at": r.finished_at, "seconds": seconds,
            "exit_status": r.exit_status, "error": r.error, "attempt": r.attempt}


def lock(found: Lock | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {"hostname": found.hostname, "owner": found.owner, "reason": found.reason,
            "created_at": found.created_at, "text": found.describe()}


def host(hostname: str, d: Deployment | None, steps: list[StepRecord],
         held: Lock | None) -> dict[str, Any]:
    """``GET /api/v1/hosts/<host>``: chat's ``status <host>``, structured."""
    return {"hostname": hostname, "state": str(d.state) if d is not None else None,
            "deployment": deployment(d) if d is not None else None,
            "steps": [step(r) for r in steps], "lock": lock(held)}


def cluster(cluster_id: str, members: list[Deployment], summary: Summary) -> dict[str, Any]:
    """``GET /api/v1/clusters/<name>``: the run's counts and every host, stopped ones first
    (as chat's summary lists them), then by id."""
    stopped = {d.id: rank for rank, d in enumerate(summary.attention)}
    ordered = sorted(members, key=lambda d: (stopped.get(d.id, len(stopped)), d.id))
    return {
        "cluster": cluster_id, "total": summary.total, "counts": summary.counts,
        "running": [{"step": number, "total": total, "name": name, "hosts": count}
                    for number, total, name, count, _names in summary.running],
        "hosts": [{"hostname": d.hostname, "state": str(d.state), "deployment": d.id,
                   "current_step": d.current_step, "total": len(d.steps),
                   "step": d.step_name(d.current_step), "error": d.error,
                   "labels": d.meta.get("labels") or {}} for d in ordered],
    }


def scrubbed(data: Any, scrub: Callable[[str], str]) -> Any:
    """``data`` with every string (keys too) passed through ``scrub`` (a ``Scrubber``'s).

    Every string is first scrubbed at once, joined by newlines: when that changes
    nothing, no string alone would change either (a URL credential or a secret
    fragment inside one string is inside the joined text too, and none of them spans a
    newline), so ``data`` is answered as it is. A few hundred separate calls cost more
    than the rest of a ``hosts/<host>`` answer; one call over the same text, a tenth.
    """
    texts: list[str] = []
    _strings(data, texts)
    joined = "\n".join(texts)
    if scrub(joined) == joined:
        return data
    return _each(data, scrub)


def _strings(data: Any, into: list[str]) -> None:
    if isinstance(data, str):
        into.append(data)
    elif isinstance(data, dict):
        for key, value in data.items():
            _strings(key, into)
            _strings(value, into)
    elif isinstance(data, (list, tuple)):
        for item in data:
            _strings(item, into)


def _each(data: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(data, str):
        return scrub(data)
    if isinstance(data, dict):
        return {_each(k, scrub): _each(v, scrub) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_each(item, scrub) for item in data]
    return data
