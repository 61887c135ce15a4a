"""Starting and stopping one real server process for a test session."""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

NOBODY = 65534


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    return check


def chown_tree(path: Path, uid: int = NOBODY) -> None:
    """Give a fixture's directory to the unprivileged user its server runs as."""
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, uid)
        for name in files:
            os.chown(os.path.join(root, name), uid, uid)
    for parent in [path, *path.parents]:
        if parent == Path("/tmp") or parent == parent.parent:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o711)


def self_signed_cert(directory: Path, name: str, *more_names: str) -> tuple[Path, Path]:
    """A certificate and key for a server that must speak TLS, valid for ``name``, the
    other names and 127.0.0.1; the tests trust it as its own CA."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    alt = ",".join([*(f"DNS:{n}" for n in (name, *more_names)), "IP:127.0.0.1"])
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName={alt}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class ServerProcess:
    """One server: started in its own session, stopped by its own PID only."""

    def __init__(self, name: str, argv: Sequence[str], *, log: Path, user: int | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log
        self.user = user if user is not None and os.geteuid() == 0 else None
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 20.0) -> ServerProcess:
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True, user=self.user,
                                         group=self.user, env=self.env, cwd=self.cwd)
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if ready():
                self.ready_seconds = time.monotonic() - started
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s: {self.tail()}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing said to clients, the kernel just closes the sockets."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class _Startable(Protocol):
    def start(self) -> Any: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Startable)


class ServerFactory(Generic[S]):
    """Starts private servers (for a test that must crash or slow one); every one is
    stopped at the end of the session. ``make(directory, **options)`` writes one
    server's configuration and returns it unstarted."""

    def __init__(self, base: Path, name: str, make: Callable[..., S]) -> None:
        self.base = base
        self.name = name
        self.make = make
        self.servers: list[S] = []
        self._counter = itertools.count()

    def __call__(self, **options: Any) -> S:
        server = self.make(self.base / f"{self.name}{next(self._counter)}", **options)
        self.servers.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@contextlib.contextmanager
def server_factory(name: str, make: Callable[..., S]) -> Iterator[ServerFactory[S]]:
    """A session's factory of ``name`` servers, with their files in a directory of its own.

    Not under pytest's tmp_path_factory: every pytest session that starts resets
    /tmp/pytest-of-<user> to 0700, and a server running as nobody must still reach
    its files while other sessions run beside this one."""
    base = Path(tempfile.mkdtemp(prefix=f"jarvis-{name}-"))
    factory = ServerFactory(base, name, make)
    try:
        yield factory
    finally:
        factory.stop_all()
        shutil.rmtree(base, ignore_errors=True)
