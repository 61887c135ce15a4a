"""A pipeline's step and the syntax of step names: ``module:task``, with an optional
timeout and undo, and the one built-in step, ``wait:host``.

``wait:host <name|role=…> <step|ready> [timeout]`` (Noah's ``noah_block``) is run by
the engine itself, without a worker process, by watching the other hosts' progress:
``wait:host role=db ready 600`` holds this host until every db host of its cluster
is ready, or fails after 600 s naming what it waited for. It is parsed here, once,
so a malformed wait is refused with the pipeline before anything runs. The syntax
of every step name lives here for that reason: checking a name means knowing the
wait's.

It is a module of its own because both a pipeline (``clipboard.pipeline``) and a
deployment's record (``clipboard.records``) hold ``Step`` objects, and the pipeline
module imports the records: here, both import it without a circle. A deployment
stores its steps as ``as_dict`` mappings; ``from_dict`` reads them back, once, where
the store reads the row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clipboard.errors import ConfigError, JarvisError, UnknownStep
from clipboard.validate import check_hostname

WAIT_STEP = "wait:host"  # run by the engine itself, never as a process
# The word a wait names the end of a pipeline by: ``State.READY``'s text (this module
# cannot import ``clipboard.records``, which imports it; a test keeps the two equal).
UNTIL_READY = "ready"
STEP_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
ROLE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62})$")


@dataclass(frozen=True)
class Wait:
    """What a ``wait:host`` step waits for: a host or every host of a role, to reach
    a step (its first successful run) or ``ready`` (the end of its pipeline)."""

    host: str | None
    role: str | None
    until: str
    timeout: float | None = None

    @property
    def target(self) -> str:
        return f"role={self.role}" if self.role else str(self.host)

    def describe(self) -> str:
        return f"{self.target} {self.until}"


def is_wait(step: str) -> bool:
    return step.split(None, 1)[:1] == [WAIT_STEP]


def parse_wait(step: str) -> Wait:
    """The wait a ``wait:host`` step names; ConfigError saying what is wrong otherwise."""
    words = step.split()
    usage = f"{WAIT_STEP} <host|role=name> <module:task|ready> [timeout seconds]"
    if not words or words[0] != WAIT_STEP or len(words) not in (3, 4):
        raise ConfigError(f"{step!r}: a wait is '{usage}'")
    target, until = words[1], words[2]
    host = role = None
    if target.lower().startswith("role="):
        role = target[5:].lower()
        if not ROLE_RE.match(role):
            raise ConfigError(f"{step!r}: role {role!r} is not a name of letters, digits, - and _")
    else:
        try:
            host = check_hostname(target)
        except JarvisError as exc:
            raise ConfigError(f"{step!r}: {exc}") from None
    if until != UNTIL_READY:
        if is_wait(until):
            raise ConfigError(f"{step!r}: a wait cannot wait for another wait")
        try:
            check_step_name(until)
        except JarvisError:
            raise ConfigError(f"{step!r}: {until!r} is neither 'ready' nor a step name "
                              "module:task") from None
    timeout = None
    if len(words) == 4:
        try:
            timeout = float(words[3])
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise ConfigError(f"{step!r}: the timeout {words[3]!r} is not a positive number "
                              "of seconds")
    return Wait(host, role, until, timeout)


def check_step_name(step: str) -> tuple[str, str]:
    """``(module, task)`` of a step name; the built-in ``wait:host ...`` is checked whole."""
    if is_wait(step):
        try:
            parse_wait(step)
        except JarvisError as exc:
            raise UnknownStep(str(exc)) from None
        return "wait", "host"
    module, sep, task = step.partition(":")
    if not sep or not module or not task or not set(module) <= STEP_NAME_CHARS \
            or not set(task) <= STEP_NAME_CHARS:
        raise UnknownStep(f"{step!r} is not a step name of the form module:task")
    return module, task


def check_name(step: str) -> None:
    """A step name a pipeline may hold: ``module:task`` or a well-formed wait."""
    if is_wait(step):
        parse_wait(step)
    else:
        check_step_name(step)


@dataclass(frozen=True)
class Step:
    name: str
    timeout: float | None = None
    undo: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The mapping a deployment's row stores it as."""
        return {"step": self.name, "timeout": self.timeout, "undo": self.undo}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Step:
        """The step ``as_dict`` stored (checked when its pipeline was read, not again)."""
        return cls(str(stored["step"]), stored.get("timeout"), stored.get("undo"))

    @property
    def wait(self) -> Wait | None:
        return parse_wait(self.name) if is_wait(self.name) else None

    @classmethod
    def parse(cls, raw: Any, where: str) -> Step:
        if isinstance(raw, str):
            check_name(raw)
            return cls(" ".join(raw.split()) if is_wait(raw) else raw)
        if isinstance(raw, dict) and isinstance(raw.get("step"), str):
            unknown = set(raw) - {"step", "timeout", "undo"}
            if unknown:
                raise ConfigError(f"{where}: unknown keys {sorted(unknown)} in a step")
            name = raw["step"]
            check_name(name)
            if raw.get("undo") is not None:
                if is_wait(name):
                    raise ConfigError(f"{where}: a wait has nothing to undo")
                if not isinstance(raw["undo"], str):
                    raise ConfigError(f"{where}: undo is a step name, module:task")
                check_step_name(raw["undo"])
            timeout = raw.get("timeout")
            if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
                raise ConfigError(f"{where}: timeout must be a positive number of seconds")
            return cls(" ".join(name.split()) if is_wait(name) else name, timeout,
                       raw.get("undo"))
        raise ConfigError(f"{where}: a step is 'module:task' or {{step: module:task, ...}}")
