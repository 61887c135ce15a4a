"""What every source returns: the bytes fetched, where from, and when.

Why a module of its own: every source module returns a ``Fetched`` and the package
(``bot.sources.fetch``) imports the sources, so defining it in the package itself made
each source and the package import one another.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fetched:
    kind: str                 # "file", "url" or "ldap"
    source: str               # the canonical place: absolute path, final URL, or DN
    data: bytes               # the bytes fetched (for LDAP: a canonical rendering of the entry)
    design: dict[str, Any] | None = None
    fetched_at: float = field(default_factory=time.time)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()
