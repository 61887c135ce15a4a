"""Whether a design carries what its pipeline's steps need, checked before anything runs.

Each task declares the clipboard fields it cannot do without (``@task(needs=...)``,
see ``clipboard.worker``); the catalog carries them as the worker processes'
configuration makes them, so a silo that is not configured needs nothing. A
need is met when the design holds the field, or when a step earlier in the
pipeline declares it writes the field (``node`` covers ``node.ip``).

Why at plan time and not in ``core:validate``: the engine already holds the
catalog and the chosen pipeline, so a design missing a field is refused in one
line when the operator says ``deploy`` (and in a dry run), before a deployment
is recorded or any node exists; ``core:validate`` would have to import every
silo's module (libcloud, paramiko: about a second) in each deployment to learn
the same thing.

``instance`` is the design's own mapping: ``core:validate`` declares it because
it normalises it, which fills no field, so only a step declaring
``instance.<field>`` (``core:randpass``: ``instance.root_password``) supplies one.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DESIGN = "instance"


def present(clipboard: Mapping[str, Any], path: str) -> bool:
    """Whether ``path`` (dotted) holds a value in ``clipboard`` (not None, "" or empty)."""
    node: Any = clipboard
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return node not in (None, "") and not (isinstance(node, (list, dict)) and not node)


def _covers(written: str, path: str) -> bool:
    if written == DESIGN:
        return False
    return path == written or path.startswith(written + ".")


def missing(clipboard: Mapping[str, Any], steps: Iterable[str],
            tasks: Mapping[str, Mapping[str, Any]], pipeline: str) -> list[str]:
    """One message per needed field that neither the design nor an earlier step provides,
    naming the steps that need it and where it could come from."""
    written: list[str] = []
    wanted: dict[str, tuple[list[str], str]] = {}
    for step in steps:
        info = tasks.get(step) or {}
        for need in info.get("needs") or ():
            path, hint = str(need["path"]), str(need.get("hint") or "")
            if present(clipboard, path) or any(_covers(w, path) for w in written):
                continue
            needers = wanted.setdefault(path, ([], hint))[0]
            if step not in needers:
                needers.append(step)
        written.extend(str(w) for w in info.get("writes") or ())
    messages = []
    for path, (needers, hint) in wanted.items():
        if not hint:
            top = path.split(".")[0]
            hint = ("set it in the design" if top == DESIGN else
                    f"no step before {needers[0]} in pipeline {pipeline} writes {top}")
        messages.append(f"{path} is missing (needed by {', '.join(needers)}): {hint}")
    return messages

