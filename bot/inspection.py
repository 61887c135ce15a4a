"""Looking back at what a deployment did: ``logs``, ``clipboard``, ``diff`` and paged
``history``. Read-only, over the store; every answer is redacted here.

A step is named as people say it: ``3`` (step 3 of the pipeline; ``0`` is the design
as fetched), ``dnswizard:update_host`` (its name), ``3.undo`` (the undo run for step 3
in a rollback) or an undo's own name. A deployment is ``#12``; by default the host's
latest. When a deployment ran a step more than once (a retry), the latest run counts.

Secrets are kept out by two nets, as everywhere (see ``clipboard.redact``): values
under secret keys are never rendered (``***``; a changed secret in a diff is just
``changed``), and every rendered line is scrubbed of every secret value that any
clipboard of the deployment ever held — a password a later step replaced, or one a
worker echoed to stderr, is still a password.

A long answer asked in a room is not cut here: the bot sends every answer longer than
``chat.fairness.private_over`` lines to the asker privately where the network can
(``bot.core.Bot.answer``), so a log never floods a room and is never shown in part.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bot import report
from clipboard import redact
from clipboard.errors import JarvisError
from clipboard.records import ClipboardVersion, Deployment, StepKind, StepRecord, StepState
from clipboard.store import Store

log = logging.getLogger(__name__)

PAGE_SIZE = 10
DIFF_LINES = 40
VALUE_CHARS = 80
# Why a step run left no clipboard, by its state.
ENDED = {StepState.FAILED: "it failed", StepState.CANCELLED: "it was cancelled",
         StepState.INTERRUPTED: "jarvis stopped during it",
         StepState.RUNNING: "it is still running"}
UNDO_WORD = re.compile(r"^(\d+)\.undo$", re.IGNORECASE)


@dataclass
class Point:
    """One place in a deployment a person named: a step run (or undo) and the
    clipboard it left, either of which may be missing."""

    word: str
    title: str
    record: StepRecord | None
    version: ClipboardVersion | None


@dataclass
class Looked:
    """A deployment with everything the answers read from it."""

    deployment: Deployment
    records: list[StepRecord]
    versions: list[ClipboardVersion]
    secrets: set[str]


class Inspection:
    """The four answers; the bot's and the CLI's ``Commands`` delegate here."""

    def __init__(self, store: Store, redact_keys: Iterable[str]) -> None:
        self.store = store
        self.keys = tuple(redact_keys)

    # -- history ---------------------------------------------------------------------------
    async def history(self, host: str, words: list[str]) -> list[str]:
        """Pages of ``PAGE_SIZE``, newest first: a host deployed daily for a year is
        still one short answer, and every page says how to get the next."""
        if len(words) > 1:
            raise JarvisError(f"history takes a host and a page number: history {host} 2")
        page = 1
        if words:
            if not words[0].isdigit() or int(words[0]) < 1:
                raise JarvisError(f"history: the page is a number from 1, not {words[0]!r}")
            page = int(words[0])
        deployments, total = await self.store.history_page(host, page, PAGE_SIZE)
        if not total:
            return [f"{host}: never deployed"]
        pages = -(-total // PAGE_SIZE)
        if page > pages:
            raise JarvisError(f"{host}: no page {page}: its {total} deployment(s) fill "
                              f"{pages} page(s)")
        workers = await self.store.workers_of([d.id for d in deployments])
        lines = [f"{host}: {total} deployment(s), newest first, page {page} of {pages}",
                 *(report.history_line(d, workers.get(d.id)) for d in deployments)]
        if page < pages:
            lines.append(f"more: history {host} {page + 1}")
        return lines

    # -- logs ------------------------------------------------------------------------------
    async def logs(self, host: str, words: list[str]) -> list[str]:
        """The stderr a step left (its last lines, as the store keeps them). By default
        the step that failed last, else the last that ran."""
        steps, ref = _split(words, "logs", host, most=1)
        looked = await self._look(host, ref)
        d = looked.deployment
        if steps:
            point = _resolve(steps[0], looked)
            if point.record is None and point.version is not None:
                raise JarvisError(f"{host}: step 0 is the design as fetched: no worker ran, "
                                  "so there is no log")
            if point.record is None:
                raise JarvisError(f"{host}: {point.title} did not run in #{d.id}")
            record = point.record
        else:
            if not looked.records:
                return [f"{host}: #{d.id} has run no step yet"]
            record = next((r for r in reversed(looked.records) if r.state == StepState.FAILED),
                          looked.records[-1])
        title = _record_title(record, d)
        status = f", exit status {record.exit_status}" if record.exit_status else ""
        head = f"{host}: #{d.id} {title}: {record.state}{status}"
        scrub = self._scrubber(looked)
        lines = [scrub(head)]
        if record.error:
            lines.append(scrub(f"error: {record.error}"))
        tail = [scrub(f"| {line}") for line in record.stderr_tail]
        if not tail:
            return [*lines, "no stderr was kept"]
        return [*lines, *tail]

    # -- clipboard -------------------------------------------------------------------------
    async def clipboard(self, host: str, words: list[str]) -> list[str]:
        """Any stored version: after a step, after an undo, of any deployment."""
        title, data, scrub = await self.clipboard_of(host, words)
        if data is None:
            return [title]
        text = report.clipboard_text(data, self.keys)
        return [title, *(scrub(line) for line in text.splitlines())]

    async def clipboard_of(self, host: str, words: list[str]
                           ) -> tuple[str, dict[str, Any] | None, Callable[[str], str]]:
        """The version ``words`` name, NOT redacted, with the line that titles it and the
        scrubber of every secret its deployment held (no clipboard and a line saying so
        when it has none yet). Chat renders it as text, the HTTP API as JSON: both
        redact it with ``self.keys`` and scrub it."""
        steps, ref = _split(words, "clipboard", host, most=1)
        looked = await self._look(host, ref)
        d = looked.deployment
        scrub = self._scrubber(looked)
        if steps:
            point = _resolve(steps[0], looked)
            version = self._kept(point, looked)
            title = point.title if version.after_step == 0 else f"after {point.title}"
        else:
            if not looked.versions:
                return f"{host}: #{d.id} has no clipboard", None, scrub
            version = looked.versions[-1]
            title = "latest, " + _version_title(version, d)
        data = await self.store.clipboard_version(version.id)
        if data is None:
            raise JarvisError(f"{host}: the clipboard of #{d.id} {title} is gone")
        return f"{host}: clipboard of #{d.id}, {title}{_attempt(version, d)}:", data, scrub

    # -- diff ------------------------------------------------------------------------------
    async def diff(self, host: str, words: list[str]) -> list[str]:
        """What one step changed (its clipboard against the version before it), or
        what changed between two steps, as dotted key paths."""
        steps, ref = _split(words, "diff", host, most=2)
        if not steps:
            raise JarvisError(f"diff needs a step: diff {host} <step> [<step>] [#deployment]")
        looked = await self._look(host, ref)
        d = looked.deployment
        points = [_resolve(word, looked) for word in steps]
        after = self._kept(points[-1], looked)
        if len(points) == 2:
            before, before_title = self._kept(points[0], looked), points[0].title
        else:
            found = _previous(after, looked.versions)
            if found is None:
                raise JarvisError(f"{host}: {points[0].title} is the first clipboard of #{d.id}: "
                                  f"nothing before it to compare; name two steps")
            before, before_title = found, _version_title(found, d)
        old = await self.store.clipboard_version(before.id)
        new = await self.store.clipboard_version(after.id)
        changes = compare(old or {}, new or {})
        scrub = self._scrubber(looked)
        counts = {mark: sum(1 for c in changes if c[0] == mark) for mark in "+~-"}
        head = (f"{host}: #{d.id} {before_title} → {points[-1].title}: {counts['+']} added, "
                f"{counts['~']} changed, {counts['-']} removed")
        lines = [head]
        for mark, path, was, now in changes[:DIFF_LINES]:
            lines.append(scrub(self._change_line(mark, path, was, now)))
        if len(changes) > DIFF_LINES:
            lines.append(f"… and {len(changes) - DIFF_LINES} more")
        return lines

    def _change_line(self, mark: str, path: tuple[Any, ...], was: Any, now: Any) -> str:
        dotted = ".".join(str(key) for key in path)
        secret = any(redact.is_secret_key(key, self.keys) for key in path)
        if mark == "~":
            if secret:
                return f"~ {dotted}: changed"
            return f"~ {dotted}: {self._value(was)} → {self._value(now)}"
        value = now if mark == "+" else was
        return f"{mark} {dotted}: {redact.MASK if secret else self._value(value)}"

    def _value(self, value: Any) -> str:
        """One short line for a value; secrets inside a list or mapping masked."""
        shown = value if isinstance(value, str) else json.dumps(
            redact.redact(value, self.keys), default=str, ensure_ascii=False)
        lines = [line for line in shown.splitlines() if line.strip()]
        first = lines[0] if lines else repr(shown)
        cut = first if len(first) <= VALUE_CHARS else first[:VALUE_CHARS - 1]
        return cut + ("…" if cut != shown else "")

    # -- shared ----------------------------------------------------------------------------
    async def _look(self, host: str, ref: str | None) -> Looked:
        """The deployment ``ref`` (``#12``) names, or the host's latest, with its step
        records, clipboard versions and every secret value it held."""
        if ref is None:
            deployment = await self.store.latest(host)
            if deployment is None:
                raise JarvisError(f"{host}: never deployed")
        else:
            number = ref[1:]
            if not number.isdigit():
                raise JarvisError(f"{ref!r} is not a deployment: say #<number>, as history "
                                  f"{host} lists them")
            deployment = await self.store.deployment(int(number))
            if deployment is None or deployment.hostname != host:
                raise JarvisError(f"{host}: no deployment {ref} of this host; history {host} "
                                  "lists them")
        log.debug("looking at #%d of %s", deployment.id, host)
        records = await self.store.steps(deployment.id)
        versions = await self.store.clipboard_versions(deployment.id)
        secrets = await self.store.secret_values(deployment.id, self.keys)
        return Looked(deployment, records, versions, secrets)

    @staticmethod
    def _scrubber(looked: Looked) -> Callable[[str], str]:
        return redact.Scrubber(looked.secrets).scrub

    @staticmethod
    def _kept(point: Point, looked: Looked) -> ClipboardVersion:
        d = looked.deployment
        if point.version is not None:
            return point.version
        if point.record is None:
            raise JarvisError(f"{d.hostname}: {point.title} did not run in #{d.id}")
        why = ENDED.get(point.record.state, f"it ended {point.record.state}")
        raise JarvisError(f"{d.hostname}: {point.title} kept no clipboard in #{d.id} "
                          f"({why} without printing one)")


def _split(words: list[str], command: str, host: str, most: int) -> tuple[list[str], str | None]:
    """Steps and the ``#deployment`` among the words after the host, in any order."""
    refs = [w for w in words if w.startswith("#")]
    steps = [w for w in words if not w.startswith("#")]
    if len(refs) > 1:
        raise JarvisError(f"{command}: name one deployment, not {' '.join(refs)}")
    if len(steps) > most:
        what = "a step" if most == 1 else f"at most {most} steps"
        raise JarvisError(f"{command} takes {what} and a #deployment: "
                          f"{command} {host} {' '.join(['<step>'] * most)} [#deployment]")
    return steps, refs[0] if refs else None


def _resolve(word: str, looked: Looked) -> Point:
    """The step (or undo) ``word`` names in the deployment, and the clipboard it left."""
    d, records, versions = looked.deployment, looked.records, looked.versions
    total = len(d.steps)
    undo = UNDO_WORD.match(word)
    if undo:
        number = int(undo.group(1))
        record = next((r for r in reversed(records)
                       if r.kind == StepKind.UNDO and r.idx == number), None)
        if record is None:
            raise JarvisError(f"{d.hostname}: step {word[:20]!r} was not undone in #{d.id}")
        return _point(word, record, versions, d)
    if word.isdigit():
        number = int(word)
        if number > total:
            raise JarvisError(_no_step(word, d))
    elif word in (names := [s.name for s in d.steps]):
        number = names.index(word) + 1
    else:
        record = next((r for r in reversed(records)
                       if r.kind == StepKind.UNDO and r.name == word), None)
        if record is None:
            raise JarvisError(_no_step(word, d))
        return _point(word, record, versions, d)
    if number == 0:
        first = next((v for v in versions if v.after_step == 0), None)
        return Point(word, "as fetched (step 0)", None, first)
    record = next((r for r in reversed(records)
                   if r.kind == StepKind.STEP and r.idx == number), None)
    if record is None:
        return Point(word, f"step {number}/{total} {d.step_name(number)}", None, None)
    return _point(word, record, versions, d)


def _no_step(word: str, d: Deployment) -> str:
    names = ", ".join(s.name for s in d.steps)
    return (f"{d.hostname}: no step {word[:40]!r} in #{d.id} (pipeline {d.pipeline}): say a "
            f"number 0–{len(d.steps)}, N.undo, or one of {names}")


def _point(word: str, record: StepRecord, versions: list[ClipboardVersion],
           d: Deployment) -> Point:
    """A step run and the clipboard ``step_finished`` stored with it (same attempt,
    created when it finished)."""
    after = -1 if record.kind == StepKind.UNDO else record.idx
    version = next((v for v in reversed(versions) if v.after_step == after
                    and v.attempt == record.attempt and v.created_at == record.finished_at),
                   None)
    return Point(word, _record_title(record, d), record, version)


def _record_title(record: StepRecord, d: Deployment) -> str:
    if record.kind == StepKind.UNDO:
        return f"the undo of step {record.idx} ({record.name})"
    return f"step {record.idx}/{len(d.steps)} {record.name}"


def _version_title(version: ClipboardVersion, d: Deployment) -> str:
    if version.after_step == 0:
        return "as fetched (step 0)"
    if version.after_step < 0:
        return f"after {version.label}"
    return f"after step {version.after_step}/{len(d.steps)} {d.step_name(version.after_step)}"


def _attempt(version: ClipboardVersion, d: Deployment) -> str:
    return f", attempt {version.attempt}" if d.attempt > 1 else ""


def _previous(version: ClipboardVersion, versions: list[ClipboardVersion]
              ) -> ClipboardVersion | None:
    """The version a step started from: the one after the step before it (the latest
    stored before this one); for an undo, whatever was stored just before it."""
    earlier = [v for v in versions if v.id < version.id]
    if version.after_step > 0:
        earlier = [v for v in earlier if v.after_step == version.after_step - 1]
    elif version.after_step == 0:
        return None
    return earlier[-1] if earlier else None


def compare(old: dict[str, Any], new: dict[str, Any]
            ) -> list[tuple[str, tuple[Any, ...], Any, Any]]:
    """``(mark, path, old value, new value)`` for every leaf that differs, in path
    order: ``+`` added, ``~`` changed, ``-`` removed. A mapping is walked into; a list
    or scalar is one leaf, compared whole."""
    before, after = _leaves(old), _leaves(new)
    changes = []
    for path in sorted(before.keys() | after.keys(), key=lambda p: [str(k) for k in p]):
        if path not in before:
            changes.append(("+", path, None, after[path]))
        elif path not in after:
            changes.append(("-", path, before[path], None))
        elif before[path] != after[path]:
            changes.append(("~", path, before[path], after[path]))
    return changes


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(data, dict) and data:
        found: dict[tuple[Any, ...], Any] = {}
        for key, value in data.items():
            found.update(_leaves(value, (*path, key)))
        return found
    return {path: data} if path else {}

