"""Between the store's rows and the records everyone else reads: a deployment, step or
lock from its row (a ``sqlite3.Row``, or the same columns as a JSON object when a
status answer brought them in one statement), and a new deployment's column values.

The only place a row's text becomes a typed record and back: a state or a step's
kind is read into its enum here, and a deployment's steps are decoded into ``Step``
objects here (and encoded with ``Step.as_dict`` when it is written), so nothing
else reads a stored step as a mapping.

A new deployment is serialised here on the event loop, before its write is queued,
so the writer thread, which every process's steps wait on, only inserts. A stored
list of steps is decoded once per distinct text: the hosts of a cluster share their
pipeline's, and a ``Step`` tuple is immutable, so they may share one decoding too.
"""
from __future__ import annotations

import functools
import json
import sqlite3
from typing import Any

from clipboard.owner import Owner
from clipboard.records import Deployment, Lock, State, StepKind, StepRecord, StepState
from clipboard.steps import Step


def deployment_from(row: sqlite3.Row | dict[str, Any]) -> Deployment:
    """The deployment a ``deployments`` row stores."""
    return Deployment(
        id=row["id"], hostname=row["hostname"], source=row["source"], pipeline=row["pipeline"],
        steps=steps_from(row["steps"]),
        state=State(row["state"]), created_at=row["created_at"],
        cluster=row["cluster"], source_kind=row["source_kind"],
        source_sha256=row["source_sha256"], fetched_at=row["fetched_at"],
        requester=row["requester"],
        reply_to=json.loads(row["reply_to"]) if row["reply_to"] else None,
        rollback=bool(row["rollback"]), current_step=row["current_step"], error=row["error"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        meta=json.loads(row["meta"] or "{}"), owner=Owner.from_json(row["owner"]),
        lease_until=row["lease_until"], attempt=row["attempt"])


@functools.lru_cache(maxsize=256)
def steps_from(text: str) -> tuple[Step, ...]:
    """The steps a deployment's ``steps`` column stores (``Step.as_dict`` mappings)."""
    return tuple(Step.from_dict(stored) for stored in json.loads(text))


def step_from(row: sqlite3.Row | dict[str, Any]) -> StepRecord:
    """The step record a ``steps`` row stores."""
    return StepRecord(id=row["id"], deployment_id=row["deployment_id"], idx=row["idx"],
                      name=row["name"], kind=StepKind(row["kind"]),
                      state=StepState(row["state"]),
                      started_at=row["started_at"], finished_at=row["finished_at"],
                      exit_status=row["exit_status"], error=row["error"],
                      stderr_tail=(row["stderr_tail"] or "").splitlines(),
                      attempt=row["attempt"], worker=row["worker"])


def lock_from(row: sqlite3.Row | dict[str, Any]) -> Lock:
    """The operator lock a ``locks`` row stores."""
    return Lock(row["hostname"], row["owner"], row["reason"], row["created_at"])


def new_row(spec: dict[str, Any]) -> dict[str, Any]:
    """A deployment's column values, serialised outside the writer thread (but its
    clipboard, which learns the deployment's id when it is inserted)."""
    reply_to = spec.get("reply_to")
    steps = tuple(spec["steps"])
    return {"hostname": spec["hostname"], "source": spec["source"],
            "source_kind": spec.get("source_kind"), "source_sha256": spec.get("source_sha256"),
            "fetched_at": spec.get("fetched_at"), "requester": spec.get("requester"),
            "reply_to": reply_to, "reply_to_json": json.dumps(reply_to) if reply_to else None,
            "pipeline": spec["pipeline"], "steps": steps,
            "steps_json": json.dumps([s.as_dict() for s in steps]),
            "rollback": bool(spec.get("rollback")),
            "state": State(spec.get("state") or State.QUEUED), "meta": spec.get("meta") or {},
            "meta_json": json.dumps(spec.get("meta") or {}), "clipboard": spec["clipboard"]}
