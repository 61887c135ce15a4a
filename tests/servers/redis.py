"""Real redis-server processes for the test session (the Celery broker and result backend).

``redis_server`` is one shared server: each test takes a database pair of its own
(``RedisServer.databases``), so tests do not see each other's queues. ``redis_factory``
starts private ones, for a test that kills and restarts its broker: those keep an
append-only file fsynced on every write, as a broker that must survive a restart does,
so a restarted server comes back with its queues and results.
Every server listens on a free loopback port, keeps its files in a directory of its own
and is stopped by its PID.
"""
from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.process import ServerFactory, ServerProcess, free_port, server_factory

DATABASES = 256  # a broker and a result database per test that shares the server


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server; ``kill`` and ``start`` again keep its port and its files."""

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistent = persistent
        self.process: ServerProcess | None = None
        self._pairs = itertools.count()

    def argv(self) -> list[str]:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.directory), "--daemonize", "no", "--databases", str(DATABASES),
                "--logfile", str(self.directory / "redis.log")]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    def start(self) -> RedisServer:
        self.process = ServerProcess("redis-server", self.argv(),
                                     log=self.directory / "stdout.log")
        self.process.start(lambda: _pong(self.port))
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def databases(self) -> tuple[int, int]:
        """A broker and a result database nobody else in this session uses."""
        pair = next(self._pairs)
        if 2 * pair + 1 >= DATABASES:
            raise RuntimeError("the shared redis-server has no database pair left")
        return 2 * pair, 2 * pair + 1


@pytest.fixture(scope="session")
def redis_factory() -> Iterator[ServerFactory[RedisServer]]:
    with server_factory("redis", RedisServer) as factory:
        yield factory


@pytest.fixture(scope="session")
def redis_server(redis_factory: ServerFactory[RedisServer]) -> RedisServer:
    return redis_factory()
