"""Shared fixtures. Every module in tests/servers/ is a plugin of session fixtures
for one real server; they are found here so a new server needs no edit of this file."""
from __future__ import annotations

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


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A safety net under the fixtures' own teardown: any process still running from
    this session's temporary directory (a local node a failed test never destroyed)
    is stopped at the end, and named, so the leak is visible and fixed where it starts."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    leaked = [pid for pid in _pids() if base in _cmdline(pid)]
    for pid in leaked:
        print(f"\nstopping a process a test left running: {pid} {_cmdline(pid)[:200]}")
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while leaked and time.monotonic() < deadline:
        leaked = [pid for pid in leaked if os.path.exists(f"/proc/{pid}")]
        time.sleep(0.05)
    for pid in leaked:
        _signal(pid, signal.SIGKILL)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != os.getpid()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
