"""A design in a local file (the embedded default's source)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from bot.sources import Fetched
from clipboard.config import Config
from clipboard.errors import SourceError


async def fetch(spec: str, config: Config) -> Fetched:
    path = Path(spec).expanduser()
    limit = int(config.get("clipboard.max_bytes"))
    try:
        data = await asyncio.to_thread(_read_capped, path, limit)
    except OSError as exc:
        raise SourceError(f"cannot read {spec}: {exc.strerror or exc}") from None
    return Fetched(kind="file", source=str(path.resolve()), data=data)


def _read_capped(path: Path, limit: int) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(2, "no such file" if not path.exists() else "not a regular file")
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise SourceError(f"{path} is over the limit of {limit} bytes")
    return data
