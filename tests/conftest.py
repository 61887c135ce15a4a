"""Shared fixtures. Every module in tests/servers/ is a plugin of session fixtures
for one real server; they are found here so a new server needs no edit of this file."""
from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

pytest_plugins = [
    f"tests.servers.{path.stem}"
    for path in sorted((Path(__file__).parent / "servers").glob("*.py"))
    if not path.stem.startswith("_") and path.stem != "process"
]


PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Iterator[None]:
    """A safety net under the fixtures' own teardown. This process becomes a child
    subreaper, so every process the session starts stays its descendant even after
    daemonising (a local node's sshd in its own session); at the end, any descendant
    still running is stopped by PID and named, so the leak is visible and fixed where
    it starts. Nothing outside this process's tree is ever touched."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    yield
    leaked = _descendants(os.getpid())
    for pid in leaked:
        print(f"\nstopping a process a test left running: {pid} {_name(pid)}")
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while leaked and time.monotonic() < deadline:
        leaked = [pid for pid in leaked if _alive(pid)]
        time.sleep(0.05)
    for pid in leaked:
        _signal(pid, signal.SIGKILL)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, from /proc/<pid>/stat; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1])


def _descendants(root: int) -> list[int]:
    """Every live (not zombie) process below ``root``, by the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            children.setdefault(stat[1], []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [pid for pid in found if _alive(pid)]


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
