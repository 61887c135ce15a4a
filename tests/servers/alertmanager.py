"""A real Prometheus Alertmanager on loopback (Debian's prometheus-alertmanager), for
the monitoring silo: its silences API v2 answers UUID silence ids, the format
``monitoring.silence_id_format: uuid`` holds jarvis to. Clustering is off
(empty ``--cluster.listen-address``), so only the one web port listens.
Skipped, with the reason, where the package is not installed."""
from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers.process import ServerProcess, free_port

BINARY = "prometheus-alertmanager"
CONFIG = 'route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n'


@dataclass
class Alertmanager:
    port: int
    process: ServerProcess

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def silence(self, silence_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url(f"/api/v2/silence/{silence_id}"), timeout=5) as r:
            return json.loads(r.read())

    def silences(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url("/api/v2/silences"), timeout=5) as r:
            return json.loads(r.read())


def _ready(port: int) -> Any:
    def check() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False
    return check


@pytest.fixture(scope="session")
def alertmanager() -> Iterator[Alertmanager]:
    if shutil.which(BINARY) is None:
        pytest.skip(f"{BINARY} is not installed (apt-get install prometheus-alertmanager)")
    base = Path(tempfile.mkdtemp(prefix="jarvis-alertmanager-"))
    (base / "am.yml").write_text(CONFIG)
    port = free_port()
    process = ServerProcess("alertmanager", [
        BINARY, f"--config.file={base / 'am.yml'}", f"--storage.path={base / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        log=base / "alertmanager.log")
    try:
        process.start(_ready(port))
        yield Alertmanager(port, process)
    finally:
        process.stop()
        shutil.rmtree(base, ignore_errors=True)
