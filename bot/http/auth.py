"""Who is asking over HTTP: bearer tokens, named in the configuration, kept hashed.

``http.tokens`` maps a token's name to the SHA-256 of its value (``sha256``), or to the
environment variable holding the value (``token_env``). The configuration never holds a
usable token, so the file can be read, backed up or pasted without granting anything.
A request's identity is ``http:<name>`` and goes through the ACL like a chat identity
(``acl.deploy: {allow: ["http:ci"]}``). Comparison is constant-time over every token, so
timing says nothing about which name came close.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping

from clipboard.settings_http import TokenSettings

log = logging.getLogger(__name__)

PREFIX = "http:"


def digest(token: str) -> str:
    """The hex SHA-256 a token is stored as (``jarvis`` users run
    ``printf %s TOKEN | sha256sum`` to get it)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The configured tokens, by name, as digests."""

    def __init__(self, tokens: Mapping[str, TokenSettings]) -> None:
        self.digests: dict[str, str] = {}
        for name, entry in tokens.items():
            if entry.sha256:
                self.digests[name] = entry.sha256.lower()
            elif entry.token_env:
                value = os.environ.get(entry.token_env)
                if value:
                    self.digests[name] = digest(value)
                else:
                    log.warning("http token %s: environment variable %s is empty; the token "
                                "is refused", name, entry.token_env)

    def name_of(self, token: str) -> str | None:
        """The name of the token with this value, or None."""
        wanted = digest(token)
        found = None
        for name, stored in self.digests.items():
            if hmac.compare_digest(stored, wanted):
                found = name
        return found

    def identity(self, authorization: str | None) -> str | None:
        """``http:<name>`` for a valid ``Authorization: Bearer <token>`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        name = self.name_of(token.strip())
        return None if name is None else PREFIX + name
