"""The clipboard contract, with real processes: the fork server's Python tasks and
an executable shell-script worker."""
from __future__ import annotations

import datetime
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipboard import config as config_mod
from clipboard.runner import Runner, StepResult
from tests.aio import LoopThread

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

WORKERS = Path(__file__).parent / "workers"
CLIP = {"instance": {"hostname": "loki", "provider": "Linode"}}


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopThread, Runner]]:
    path = tmp_path_factory.mktemp("runner") / "jarvis.yaml"
    path.write_text(f"runner:\n  worker_dirs: [{WORKERS}]\n  kill_grace: 0.5\n"
                    "clipboard:\n  max_bytes: 1000000\n")
    loop = LoopThread()
    r = Runner(config_mod.load(path))
    loop.run(r.start())
    yield loop, r
    loop.run(r.close())
    loop.close()


def run(runner: tuple[LoopThread, Runner], step: str, clip: dict = CLIP,
        timeout: float = 20) -> StepResult:
    loop, r = runner
    return loop.run(r.run(step, clip, timeout=timeout))


def test_python_task_replaces_the_clipboard(runner) -> None:
    result = run(runner, "core:validate")
    assert result.ok and result.exit_status == 0
    assert result.clipboard["instance"]["provider"] == "linode"


@pytest.mark.parametrize("extra", [
    {"size": 2, "ratio": 1e16, "note": "päivää\nline two", "tags": ["a", None, True]},
    {"built": datetime.date(2011, 4, 19), "ports": {22: "ssh", 80: "http"}},  # not JSON
])
def test_a_python_task_is_handed_exactly_the_clipboard(runner, extra: dict) -> None:
    """JSON when it says the clipboard exactly (faster in the child), YAML otherwise."""
    clip = {"instance": {**CLIP["instance"], **extra}}
    result = run(runner, "core:echo", clip)
    assert result.ok, result.error
    assert result.clipboard == clip


def test_empty_stdout_leaves_the_clipboard_unchanged(runner) -> None:
    result = run(runner, "shellworker:silent")
    assert result.ok and result.clipboard == CLIP and result.printed is None
    assert "nothing to change" in result.stderr


def test_executable_worker_gets_its_task_and_the_clipboard(runner) -> None:
    result = run(runner, "shellworker:tag")
    assert result.ok, result.error
    assert result.clipboard["instance"]["tagged"] is True


def test_failing_worker_keeps_its_mapping_and_says_why(runner) -> None:
    result = run(runner, "shellworker:fail")
    assert not result.ok and result.exit_status == 3
    assert result.clipboard == {"node": {"id": "n-42"}}
    assert result.error == "creating the node failed: quota (exit status 3)"
    assert result.stderr_tail(5) == ["creating the node failed: quota"]


@pytest.mark.parametrize("task, message", [
    ("garbage", "the worker's output is not valid YAML"),
    ("scalar", "the worker's output must be a YAML mapping at the top level, not str"),
    ("huge", "printed more than the limit of 1000000 bytes on stdout"),
])
def test_bad_output_fails_the_step_with_exactly_that(runner, task: str, message: str) -> None:
    result = run(runner, f"shellworker:{task}")
    assert not result.ok
    assert result.error.startswith(message)
    assert result.clipboard == CLIP


def test_timeout_kills_the_whole_process_group(runner, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    result = run(runner, "shellworker:hang", {**CLIP, "pidfile": str(pidfile)}, timeout=1)
    assert time.monotonic() - started < 5
    assert result.timed_out and not result.ok
    assert result.error == "timed out after 1s; its process group was killed"
    grandchild = int(pidfile.read_text())
    for _ in range(100):
        if not _alive(grandchild):
            break
        time.sleep(0.02)
    assert not _alive(grandchild), "the worker's own child survived the timeout"


def test_crash_by_signal_is_reported(runner) -> None:
    result = run(runner, "shellworker:segv")
    assert not result.ok and result.exit_status == -signal.SIGSEGV
    assert "killed by signal SIGSEGV" in result.error


def test_worker_that_never_reads_stdin_still_runs(runner) -> None:
    big = {**CLIP, "blob": "y" * 500_000}
    result = run(runner, "shellworker:noread", big)
    assert result.ok and result.clipboard == {"a": 1}


def test_unknown_steps_and_tasks_say_so(runner) -> None:
    assert "unknown step 'nosuch:thing'" in run(runner, "nosuch:thing").error
    assert "not a step name" in run(runner, "core;rm:x").error
    result = run(runner, "shellworker:nope")
    assert not result.ok and "no task nope" in result.error


def test_the_fork_server_dying_fails_the_step_and_is_restarted(runner) -> None:
    _loop, r = runner
    server = r.server("core")
    os.kill(server._proc.pid, signal.SIGKILL)
    for _ in range(100):
        if server._sock is None:
            break
        time.sleep(0.02)
    result = run(runner, "core:validate")
    assert result.ok, result.error
    assert server._proc.poll() is None


def test_an_executable_starts_in_a_session_of_its_own_with_default_signals(
        tmp_path: Path) -> None:
    """Spawned, not forked: it must still lead its own process group (the runner kills
    the group) and get SIGINT and SIGPIPE back, which the fork server and Python ignore."""
    (tmp_path / "probe").write_text(
        "#!/bin/sh\ncat >/dev/null\ncut -d' ' -f1,5,6 /proc/$$/stat >&2\n"
        "grep -E '^Sig(Ign|Cgt)' /proc/$$/status >&2\nkill -INT $$\necho survived\n")
    (tmp_path / "noshell").write_text("#!/nonexistent/interpreter\n")
    for name in ("probe", "noshell"):
        (tmp_path / name).chmod(0o755)
    (tmp_path / "jarvis.yaml").write_text(f"runner:\n  worker_dirs: [{tmp_path}]\n")
    loop, r = LoopThread(), Runner(config_mod.load(tmp_path / "jarvis.yaml"))
    try:
        loop.run(r.start())
        probe = loop.run(r.run("probe:look", CLIP, timeout=20))
        missing = loop.run(r.run("noshell:any", CLIP, timeout=20))
    finally:
        loop.run(r.close())
        loop.close()
    assert probe.exit_status == -signal.SIGINT, probe.stderr
    pid, pgid, sid = probe.stderr.splitlines()[0].split()
    assert pid == pgid == sid
    ignored = int(probe.stderr.splitlines()[1].split()[1], 16)
    assert not ignored & (1 << (signal.SIGINT - 1) | 1 << (signal.SIGPIPE - 1))
    assert not missing.ok
    assert missing.error == f"cannot execute {tmp_path / 'noshell'}: No such file or directory"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
