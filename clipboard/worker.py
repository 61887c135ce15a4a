"""How Python workers declare their tasks, and how a worker process runs one.

A worker module in ``workers/`` marks each task with ``@task``; only marked
functions can be named by a pipeline step, so ``core:__import__`` or a helper
that happens to be importable never runs. ``undo`` names the task that reverses
this one (rollback), ``timeout`` overrides the runner's default for the step.

``writes`` names the top-level clipboard keys the task adds, replaces or removes
(``node``, ``dns``...; ``instance.<field>`` for a design field it fills in when
the design left it out). The declarations travel in the catalog, and
``clipboard.schema`` refuses a design that sets any key a step writes: a node id
or a silence id in the clipboard must come from a step of this deployment, never
from whoever could edit the design. ``run_task`` holds tasks to their word: one
that adds or removes a top-level key it did not declare fails. A task that does
not declare ``writes`` (``None``) is taken to write nothing; every shipped task
declares, even an empty tuple, and a test keeps it so.

``needs`` names the clipboard fields the task cannot do without (``"node.ip"``,
``"instance.fqdn"``, or a ``Need`` with a hint saying where the field could come
from). It may be a callable of the configuration instead, because a silo that
is not configured changes nothing and so needs nothing: ``dnswizard`` needs
``instance.fqdn`` only when DNS is configured and no domain derives it. The
catalog carries each task's needs as evaluated against the configuration of the
process that built it, and ``clipboard.needs`` checks a whole pipeline against
the design when the deployment is planned, before any step runs.

``run_task`` is the body of a worker process: it is what the fork server's child
executes, and what ``python -m clipboard.worker module:task`` executes, so the
contract (YAML clipboard on stdin, whole new clipboard or nothing on stdout,
log on stderr, exit status) is implemented once.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from clipboard import config as config_mod
from clipboard import document, redact, settings
from clipboard.errors import JarvisError, StepFailed

log = logging.getLogger(__name__)

TaskFunc = Callable[[dict[str, Any]], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Need:
    """A clipboard field a task needs (dotted path), and where a person could get it from."""

    path: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "hint": self.hint}


NeedsSpec = Iterable["str | Need"] | Callable[[Any], Iterable["str | Need"]]

EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class TaskInfo:
    name: str
    func: TaskFunc
    undo: str | None = None
    timeout: float | None = None
    doc: str = ""
    writes: tuple[str, ...] | None = None
    needs: NeedsSpec = ()

    def needs_for(self, cfg: Any) -> list[Need]:
        """The fields this task needs under configuration ``cfg`` (a ``clipboard.config.Config``)."""
        declared = self.needs(cfg) if callable(self.needs) else self.needs
        return [n if isinstance(n, Need) else Need(str(n)) for n in declared]


REGISTRY: dict[str, TaskInfo] = {}
IMPORT_ERRORS: dict[str, str] = {}


def task(func: TaskFunc | None = None, *, undo: str | None = None,
         timeout: float | None = None, writes: tuple[str, ...] | None = None,
         needs: NeedsSpec = (), name: str | None = None) -> Any:
    """Mark a worker function as a pipeline task named ``<module>:<function>``.

    ``name`` registers it under another ``<silo>:<step>`` instead: one function
    body serving several silos (the seed-style ``linode:deploy``) needs no
    rewritten ``__module__`` or ``__qualname__`` to get its name.
    """
    if isinstance(writes, str):
        raise TypeError("writes is a tuple of keys: writes=(\"node\",), not writes=\"node\"")
    if isinstance(needs, str):
        raise TypeError("needs is a tuple of fields: needs=(\"node.ip\",), not needs=\"node.ip\"")
    if not callable(needs):
        needs = tuple(needs)
    def mark(f: TaskFunc) -> TaskFunc:
        registered = name or f"{f.__module__.rpartition('.')[2]}:{f.__name__}"
        doc = (f.__doc__ or "").strip().splitlines()
        REGISTRY[registered] = TaskInfo(registered, f, undo, timeout, doc[0] if doc else "",
                                        None if writes is None else tuple(writes), needs)
        return f
    return mark(func) if func is not None else mark


def operator_intent(clipboard: dict[str, Any]) -> dict[str, Any]:
    """What the operator decided, as the engine recorded it under ``jarvis:``
    (``deployment``, ``pipeline``, ``force``, ``requested_by``, ``requested_at``); {} when
    absent.

    The only place a worker may read operator intent: no design can write ``jarvis``.
    """
    intent = clipboard.get("jarvis")
    return intent if isinstance(intent, dict) else {}


def import_module(name: str) -> None:
    """Import ``workers.<name>``, recording (not raising) why it cannot be imported."""
    try:
        importlib.import_module(f"workers.{name}")
    except Exception as exc:  # noqa: BLE001 - a missing optional library must not hide the others
        IMPORT_ERRORS[name] = f"{type(exc).__name__}: {exc}"
        log.warning("worker module %s failed to import: %s", name, exc)


def module_names() -> list[str]:
    import workers
    return [info.name for info in pkgutil.iter_modules(workers.__path__)
            if not info.name.startswith("_")]


def import_all() -> dict[str, TaskInfo]:
    """Import every module of the ``workers`` package once; keep going past broken ones."""
    for name in module_names():
        import_module(name)
    return REGISTRY


def catalog() -> dict[str, Any]:
    """What the imported modules offer, as plain data for the bot (needs as this
    process's configuration makes them)."""
    cfg = config_mod.current()
    tasks = {name: {"undo": info.undo, "timeout": info.timeout, "doc": info.doc,
                    "writes": list(info.writes or ()),
                    "needs": [n.as_dict() for n in info.needs_for(cfg)]}
             for name, info in sorted(REGISTRY.items())}
    return {"tasks": tasks, "import_errors": dict(IMPORT_ERRORS), "settings": declared_settings()}


def declared_settings() -> dict[str, list[str]]:
    """Worker module -> the ``Config`` sections it reads, as its ``SETTINGS`` declares
    (``clipboard.settings``), for every imported worker module."""
    out: dict[str, list[str]] = {}
    for name in module_names():
        module = sys.modules.get(f"workers.{name}")
        if module is not None:
            out[name] = [settings.attribute_of(cls) for cls in getattr(module, "SETTINGS", ())]
    return out


def lookup(step: str) -> TaskInfo:
    module, _, _name = step.partition(":")
    if step not in REGISTRY and module not in IMPORT_ERRORS and module in module_names():
        import_module(module)
    if step in REGISTRY:
        return REGISTRY[step]
    if module in IMPORT_ERRORS:
        raise JarvisError(f"worker module {module!r} cannot be imported: {IMPORT_ERRORS[module]}")
    raise JarvisError(f"no Python worker task {step!r}")


def run_task(step: str, stdin: Any, stdout: Any, stderr: Any,
             max_bytes: int = document.DEFAULT_MAX_BYTES) -> int:
    """Run one Python task under the clipboard contract; return the exit status.

    Logging must already send to ``stderr`` (``configure_logging``): the fork server
    sets it up once, so each step does not pay for it again.
    """
    try:
        info = lookup(step)
        clip = document.load_handed(stdin.read(), max_bytes=max_bytes)
    except JarvisError as exc:
        print(f"{step}: {exc}", file=stderr)
        return EXIT_USAGE
    before = set(clip)
    try:
        result = info.func(clip)
    except StepFailed as exc:
        if exc.clipboard is not None:
            stdout.write(document.dump(exc.clipboard))
        print(f"{step}: {exc}", file=stderr)
        return EXIT_FAILED
    except JarvisError as exc:
        print(f"{step}: {exc}", file=stderr)
        return EXIT_FAILED
    except Exception:  # noqa: BLE001 - a task's bug fails its step, with its traceback
        traceback.print_exc(file=stderr)
        return EXIT_FAILED
    if result is not None:
        if not isinstance(result, dict):
            print(f"{step}: returned {type(result).__name__}, not a mapping", file=stderr)
            return EXIT_FAILED
        undeclared = sorted(str(k) for k in before.symmetric_difference(result)
                            if str(k) not in (info.writes or ()))
        if undeclared:
            print(f"{step}: added or removed the top-level keys {', '.join(undeclared)}, which "
                  "it does not declare in @task(writes=...); refused", file=stderr)
            return EXIT_FAILED
        stdout.write(document.dump(result))
    return 0


def configure_logging(stream: Any = None) -> None:
    """Worker log lines go to stderr, which the runner keeps as the step's log.

    URL credentials are masked here already (a worker logging the output of a command
    that echoed its repository URL); the deployment's and the configuration's secrets
    are scrubbed from that log by the engine before it is stored (clipboard.drive)."""
    logging.basicConfig(stream=stream or sys.stderr, level=logging.INFO, force=True,
                        format="%(levelname)s %(name)s: %(message)s")
    redact.guard_logging(redact.Scrubber())


def main(argv: list[str] | None = None) -> int:
    """``python -m clipboard.worker module:task``: one task, outside the fork server."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m clipboard.worker module:task < clipboard.yaml", file=sys.stderr)
        return EXIT_USAGE
    configure_logging()
    status = run_task(argv[0], sys.stdin, sys.stdout, sys.stderr)
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    # Tasks register in the importable module ``clipboard.worker``, not in this ``__main__`` copy.
    from clipboard.worker import main as registered_main
    sys.exit(registered_main())
