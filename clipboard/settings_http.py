"""The ``http:`` section, typed (``clipboard.settings`` explains the scheme; this
section lives apart only to keep that module short).

A token is never written usable: ``sha256`` holds its digest, or ``token_env`` names
the environment variable that holds it (``bot.http.auth``). A watch's signing secret
is a ``Secret`` pair like every other, since jarvis must hold it to sign.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from clipboard.errors import ConfigError
from clipboard.secret import Secret

DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class TokenSettings:
    sha256: str | None
    token_env: str | None


@dataclass(frozen=True)
class WatchSettings:
    url: str | None
    secret: Secret
    host: str | None
    cluster: str | None
    kind: str | None


@dataclass(frozen=True)
class HttpSettings:
    listen: str | None
    read: Literal["open", "token"]
    tokens: Mapping[str, TokenSettings]
    events_kept: int
    heartbeat: float
    stream_queue: int
    watch_timeout: float
    watch_backoff: float
    watch_max_backoff: float
    watches: Mapping[str, WatchSettings]

    def check(self) -> None:
        for name, token in self.tokens.items():
            if token.sha256 is not None and not DIGEST.match(token.sha256):
                raise ConfigError(f"http.tokens.{name}.sha256 must be 64 hex digits (the "
                                  "SHA-256 of the token: printf %s \"$TOKEN\" | sha256sum)")
            if token.sha256 is None and token.token_env is None:
                raise ConfigError(f"http.tokens.{name} needs sha256 or token_env")
        for name, watch in self.watches.items():
            if not watch.url:
                raise ConfigError(f"http.watches.{name}.url is not set")
            if not watch.secret.configured:
                raise ConfigError(f"http.watches.{name} needs secret or secret_env: "
                                  "every webhook is signed")
