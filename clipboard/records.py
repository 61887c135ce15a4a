"""The records a deployment's life is told in: its states, a step's states and kinds,
and the deployment, step, lock, clipboard version and summary records the store
returns and everyone else reads.

A state is stored as its text, so the enum's values are what the store, ``status``
and every filter read; being a ``StrEnum`` it still compares equal to that text.
Each state says what happened, never more: a host a pipeline removed reads
``decommissioned``, not ``ready``; a deployment whose completed steps were undone
reads ``rolled back`` (or ``rollback failed``), not merely ``failed``.

The store's rows become these records in one place (``clipboard.store_rows``): a
state or a step's state and kind read there is a member of its enum, and a
deployment's steps are ``Step`` objects, as its pipeline holds them (``Step`` lives
in ``clipboard.steps``, which the pipeline module imports too).

A forced deployment (``deploy … force``) is recorded ``awaiting approval``: it
holds its host (it is active) but no process owns or drives it, so neither a
restart nor another process's adoption can start it; only ``approve`` by a second
person makes it ``queued`` (owned, driven), and a window passing without one makes
it ``approval expired``. See ``clipboard.approval``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from clipboard.owner import Owner
from clipboard.steps import Step


class State(StrEnum):
    QUEUED = "queued"              # recorded, no step started yet
    RUNNING = "running"            # a step (or a wait) is under way
    ROLLING_BACK = "rolling back"  # a step failed or it was cancelled; undos are running
    READY = "ready"                # every step ran; the host is there
    DECOMMISSIONED = "decommissioned"  # every step of a removing pipeline ran; the host is gone
    FAILED = "failed"              # a step failed; nothing was undone (rollback off)
    CANCELLED = "cancelled"        # someone cancelled it; nothing was undone (rollback off)
    ROLLED_BACK = "rolled back"    # it failed or was cancelled, and every undo succeeded
    ROLLBACK_FAILED = "rollback failed"  # it failed or was cancelled, and an undo failed
    AWAITING_APPROVAL = "awaiting approval"  # forced: recorded, nothing runs until a second person approves
    APPROVAL_EXPIRED = "approval expired"    # forced, and nobody approved it in time: nothing ran


# Driven: a process owns it (under a lease) and runs its steps; what a restart takes up.
DRIVEN = frozenset({State.QUEUED, State.RUNNING, State.ROLLING_BACK})
# Active: it holds its host — driven, or waiting for approval (owned by nobody); at most
# one per host (the store enforces it).
ACTIVE = DRIVEN | {State.AWAITING_APPROVAL}
# It ended as asked.
SUCCEEDED = frozenset({State.READY, State.DECOMMISSIONED})
# It ended short of its pipeline's end: what ``retry`` takes and summaries list first.
STOPPED = frozenset({State.FAILED, State.CANCELLED, State.ROLLED_BACK, State.ROLLBACK_FAILED})
UNDONE = frozenset({State.ROLLED_BACK, State.ROLLBACK_FAILED})
# A step (or an undo) is under way: what summaries group by the step it is at.
UNDER_WAY = frozenset({State.RUNNING, State.ROLLING_BACK})
# The stopped, in the order summaries list them: failures first, then what rollback
# left, then the cancelled.
ATTENTION_ORDER = (State.ROLLBACK_FAILED, State.FAILED, State.ROLLED_BACK, State.CANCELLED)


class StepState(StrEnum):
    """How one run of a step (or of an undo) went, as its row in ``steps`` says."""

    RUNNING = "running"          # started, not finished
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"      # its deployment was cancelled while it ran
    INTERRUPTED = "interrupted"  # the jarvis running it stopped (found on taking it up)


class StepKind(StrEnum):
    """What a row in ``steps`` ran: a pipeline's step, or the undo of one in a rollback."""

    STEP = "step"
    UNDO = "undo"


def sql_list(states: frozenset[State]) -> str:
    """``('queued', 'running', …)`` for a SQL ``IN``, in a stable order."""
    return "(" + ", ".join(f"'{state.value}'" for state in sorted(states)) + ")"


@dataclass
class Deployment:
    """One deployment of one host, as stored. ``attempt`` counts its runs: a retry
    runs it again under the same id (so a cluster keeps its members) as attempt 2, 3…"""

    id: int
    hostname: str
    source: str
    pipeline: str
    steps: tuple[Step, ...]
    state: State
    created_at: float
    cluster: str | None = None
    source_kind: str | None = None
    source_sha256: str | None = None
    fetched_at: float | None = None
    requester: str | None = None
    reply_to: dict[str, Any] | None = None
    rollback: bool = False
    current_step: int = 0
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    owner: Owner | None = None
    lease_until: float | None = None
    attempt: int = 1

    def step_name(self, number: int) -> str | None:
        """The name of step ``number`` (1-based) of its pipeline; None outside it."""
        return self.steps[number - 1].name if 1 <= number <= len(self.steps) else None

    def driver(self) -> str:
        """Who drives it and how far it got, for a refusal:
        ``#12 (jarvis run on host h, pid 4242; step 5/15; requested by console:alice)``."""
        if self.state == State.AWAITING_APPROVAL:
            who = "awaiting approval"
        elif self.owner is None:
            who = "no process: the next jarvis start takes it up"
        elif self.owner.gone(self.lease_until, time.time()):
            who = f"{self.owner.describe()}, which has stopped: the next jarvis start resumes it"
        else:
            who = self.owner.describe()
        parts = [who]
        if self.state == State.ROLLING_BACK:
            parts.append("rolling back")
        elif self.current_step:
            parts.append(f"step {self.current_step}/{len(self.steps)}")
        if self.requester:
            parts.append(f"requested by {self.requester}")
        return f"#{self.id} ({'; '.join(parts)})"

    @property
    def ends_as(self) -> State:
        """The state a complete run of its pipeline leaves it in (ready, or decommissioned)."""
        return State(self.meta.get("ends_as") or State.READY)


@dataclass(frozen=True)
class Lock:
    """A host an operator has locked (hubot-deploy's ``lock``): no deployment of it
    starts — deploy, retry, a cluster that includes it, from any process — until it
    is unlocked. It does not stop a deployment already running, nor one a restart
    resumes: it is about what starts next. The store checks it in the transaction
    that starts a deployment, so a lock said in chat holds for ``jarvis deploy`` too."""

    hostname: str
    owner: str
    reason: str
    created_at: float

    def describe(self) -> str:
        """``loki is locked by console:alice since 2026-11-22 03:40 UTC: kernel by hand``."""
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.created_at))
        reason = f": {self.reason}" if self.reason else ""
        return f"{self.hostname} is locked by {self.owner} since {since}{reason}"


@dataclass
class StepRecord:
    """One run of a step or of an undo (``kind``), as its row in ``steps`` stores it."""

    id: int
    deployment_id: int
    idx: int
    name: str
    kind: StepKind
    state: StepState
    started_at: float | None
    finished_at: float | None
    exit_status: int | None
    error: str | None
    stderr_tail: list[str]
    attempt: int = 1
    worker: str | None = None  # the Celery worker that ran it (runner.backend: celery)


NAMES_SHOWN = 8


@dataclass
class Summary:
    """Many hosts at once: counts per state, the stopped ones (failures first, up to a
    limit), the running ones grouped by step as (step number, steps, step name, how
    many, first hostnames), and the first queued hostnames."""

    counts: dict[str, int]
    total: int
    attention: list[Deployment]
    running: list[tuple[int, int, str | None, int, list[str]]]
    queued: list[str]

    @property
    def stuck(self) -> int:
        """How many hosts ended short of their pipeline (``attention`` may show fewer)."""
        return sum(self.counts.get(state, 0) for state in STOPPED)


def attention_rank(state: str) -> int:
    """Failures first, then what rollback left, then the cancelled."""
    if state in STOPPED:
        return ATTENTION_ORDER.index(State(state))
    return len(ATTENTION_ORDER)


def summarize(deployments: list[Deployment], limit: int) -> Summary:
    """The summary ``store_status.summary`` reads, made from deployments in memory:
    a cluster run the bot is following is answered without a trip to the store."""
    ordered = sorted(deployments, key=lambda d: d.id)
    counts: dict[str, int] = {}
    groups: dict[tuple[str, int], list[Deployment]] = {}
    for d in ordered:
        counts[d.state] = counts.get(d.state, 0) + 1
        if d.state in UNDER_WAY:
            groups.setdefault((d.pipeline, d.current_step), []).append(d)
    attention = sorted((d for d in ordered if d.state in STOPPED),
                       key=lambda d: attention_rank(d.state))[:limit]
    running = [(step, len(hosts[0].steps), hosts[0].step_name(step), len(hosts),
                [d.hostname for d in hosts[:NAMES_SHOWN]])
               for (_, step), hosts in groups.items()]
    running.sort(key=lambda group: (-group[3], group[0]))
    queued = [d.hostname for d in ordered if d.state == State.QUEUED][:NAMES_SHOWN]
    return Summary(counts, len(ordered), attention, running, queued)


@dataclass
class StatusAnswer:
    """What ``Store.status_of`` found: a cluster's or a selection's summary (none when
    ``live``), a host's latest deployment with its steps and its operator lock, or
    (``missing``) no cluster of that name."""

    cluster: str | None = None
    summary: Summary | None = None
    deployment: Deployment | None = None
    steps: list[StepRecord] = field(default_factory=list)
    lock: Lock | None = None
    missing: bool = False
    live: bool = False  # ``cluster`` is a run the caller follows: it makes the summary


@dataclass(frozen=True)
class ClipboardVersion:
    """One stored clipboard, without its YAML (``Store.clipboard_versions``)."""

    id: int
    after_step: int  # the step's number; 0: the design as fetched; -1: after an undo
    label: str       # initial, ok, failed, undo <name>
    attempt: int
    created_at: float


class EventKind(StrEnum):
    """What an ``Event`` says happened (named after Salt Cloud's provisioning events)."""

    ACCEPTED = "deploy.accepted"
    RESUMED = "deploy.resumed"          # taken up again after its owner stopped
    RETRIED = "deploy.retried"
    STEP_STARTED = "step.started"
    STEP_OK = "step.ok"
    STEP_FAILED = "step.failed"
    FAILED = "deploy.failed"            # a step failed (a rollback may follow)
    CANCELLED = "deploy.cancelled"      # it stopped on a cancel (a rollback may follow)
    UNDO_STARTED = "undo.started"
    UNDO_OK = "undo.ok"
    UNDO_FAILED = "undo.failed"
    READY = "deploy.ready"
    DECOMMISSIONED = "deploy.decommissioned"
    ROLLED_BACK = "deploy.rolled_back"
    ROLLBACK_FAILED = "deploy.rollback_failed"
    APPROVED = "deploy.approved"        # a second person approved a forced deployment
    APPROVAL_EXPIRED = "deploy.approval_expired"


@dataclass
class Event:
    """Something a person may want to hear about, as the engine tells it."""

    kind: EventKind
    deployment: Deployment
    step: str | None = None
    index: int | None = None
    total: int | None = None
    seconds: float | None = None
    error: str | None = None
