"""Shared fixtures. Every module in tests/servers/ is a plugin of session fixtures
for one real server; they are found here so a new server needs no edit of this file."""
from __future__ import annotations

from pathlib import Path

pytest_plugins = [
    f"tests.servers.{path.stem}"
    for path in sorted((Path(__file__).parent / "servers").glob("*.py"))
    if not path.stem.startswith("_") and path.stem != "process"
]
