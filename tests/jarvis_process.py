"""jarvis as a person runs it, as a real process: ``jarvis run`` with its console on
a pipe (say a line, expect an answer), or a one-shot ``jarvis deploy``. Each runs in
its own process group, which is what stopping it (or killing it with -9) signals."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JARVIS_CONFIG"}
    env["XDG_STATE_HOME"] = str(tmp / "state")
    return env


def start(*args: str, env: dict[str, str], stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bot.cli", *args], text=True, env=env,
                            cwd=ROOT, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def start_worker(config: Path, name: str, env: dict[str, str], *queues: str,
                 concurrency: int = 2) -> subprocess.Popen[bytes]:
    """A ``jarvis worker`` named ``name@test`` in its own process group, logging to
    ``name.log`` beside its configuration, once it said it is ready."""
    log = config.parent / f"{name}.log"
    argv = [sys.executable, "-m", "bot.cli", "worker", "--config", str(config),
            "--hostname", f"{name}@test", "--concurrency", str(concurrency),
            "--log-level", "INFO"]
    if queues:
        argv += ["--queues", ",".join(queues)]
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 60
    while process.poll() is None and f"{name}@test ready." not in log.read_text():
        if time.monotonic() > deadline:
            kill_group(process)
            raise AssertionError(f"worker {name} was not ready in 60 s: "
                                 f"{log.read_text()[-2000:]}")
        time.sleep(0.05)
    assert process.poll() is None, log.read_text()[-2000:]
    return process


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each worker's process group (a warm shutdown), SIGKILL after 15 s."""
    for process in workers:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in workers:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def kill_group(process: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


class Console:
    """``jarvis run`` on its console: lines in on stdin, answers read from stdout.
    ``expect`` reads on from where the last one stopped; ``find`` looks through
    everything said so far (and waits), so threads may each look for their own line."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.process = start("run", "--config", str(config), env=env, stdin=True)
        self.seen: list[str] = []
        self._read_to = 0
        self._said = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._said:
                self.seen.append(line.rstrip("\n"))
                self._said.notify_all()

    def say(self, text: str) -> None:
        assert self.process.stdin is not None
        with self._said:
            self.process.stdin.write(text + "\n")
            self.process.stdin.flush()

    def expect(self, pattern: str, timeout: float = 30) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._said:
            while True:
                while self._read_to < len(self.seen):
                    line = self.seen[self._read_to]
                    self._read_to += 1
                    if regex.search(line):
                        return line
                if not self._said.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"jarvis run never said {pattern!r}; it said "
                                         f"{self.seen[-15:]}")

    def find(self, pattern: str, timeout: float = 30) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._said:
            while True:
                found = next((line for line in self.seen if regex.search(line)), None)
                if found is not None:
                    return found
                if not self._said.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"jarvis run never said {pattern!r}")

    def ask(self, text: str, pattern: str, timeout: float = 30) -> str:
        self.say(text)
        return self.expect(pattern, timeout)

    def kill(self) -> None:
        kill_group(self.process)
        self.process.wait(10)
