"""Shared fixtures. Every module in tests/servers/ is a plugin of session fixtures
for one real server; they are found here so a new server needs no edit of this file.

The fast tier: ``pytest -m "not servers"`` runs only tests that start no server and
no process (worker, fork server, jarvis, git, ...). A test is marked ``servers``
when it uses a fixture from tests/servers/ (found here, so no test file says it),
or by its module's ``pytestmark`` when it starts processes itself. The rule is
enforced, not hoped for: a test without the mark that starts a process has the
start refused and fails naming the mark, so a misfiled test cannot slow the fast
tier down or hide in it.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    f"tests.servers.{path.stem}"
    for path in sorted((Path(__file__).parent / "servers").glob("*.py"))
    if not path.stem.startswith("_") and path.stem != "process"
]


PR_SET_CHILD_SUBREAPER = 36
SERVERS = "servers"
SERVER_FIXTURES = "tests.servers."
# The audit events (PEP 578) of everything that starts a process.
SPAWNS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn",
                    "os.system", "os.exec", "os.spawn", "pty.spawn"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``servers`` every test that uses a real server's fixture (before ``-m``
    selects: conftest hooks run ahead of pytest's own)."""
    for item in items:
        if item.get_closest_marker(SERVERS) is None and _uses_server_fixture(item):
            item.add_marker(SERVERS)


def _uses_server_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(getattr(fixture.func, "__module__", "").startswith(SERVER_FIXTURES)
               for fixtures in info.name2fixturedefs.values() for fixture in fixtures)


class _ProcessGuard:
    """Refuses process starts while a test without the ``servers`` mark runs. Threads
    that were running before the test began are left alone: they belong to earlier
    tests' session fixtures (a server's own thread), not to this test."""

    def __init__(self) -> None:
        self.test: str | None = None
        self.refused: list[str] = []
        self.earlier: set[int] = set()
        self.item: str | None = None  # whose ``earlier`` it is (kept from setup to call)
        sys.addaudithook(self._audit)  # cannot be removed: it stays idle between tests

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.test is not None and event in SPAWNS \
                and threading.get_ident() not in self.earlier:
            what = f"{event} {str(args[:2])[:120]}"
            self.refused.append(what)
            raise PermissionError(f"{self.test} started a process ({what}) without the "
                                  f"'{SERVERS}' mark")

    @contextlib.contextmanager
    def watching(self, item: pytest.Item) -> Iterator[None]:
        if item.get_closest_marker(SERVERS) is not None:
            yield
            return
        self.test, self.refused = item.nodeid, []
        if self.item != item.nodeid:
            self.item = item.nodeid
            self.earlier = {t.ident for t in threading.enumerate()
                            if t.ident is not None and t is not threading.main_thread()}
        try:
            yield
        finally:
            self.test = None
            if self.refused:
                pytest.fail(f"{item.nodeid} starts processes ({self.refused[0]}): mark it "
                            f"'{SERVERS}' (tests/conftest.py says how)", pytrace=False)


_guard = _ProcessGuard()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _guard.watching(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _guard.watching(item):
        return (yield)


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
