"""Where designs come from: a local file, an HTTPS URL or gist, or LDAP ``cn=``.

``fetch`` picks the source by the shape of the spec and returns the raw bytes
with their provenance; parsing (with the clipboard's limits) is done by the
caller, once, whatever the source. A source that builds the mapping itself
(LDAP) returns it in ``design``, already loaded with ``clipboard.document``.
Every source raises ``SourceError`` with a one-line reason and never blocks
the event loop.

``local`` says who asked: the console or the CLI (the local user, who may read
any file that user can) or a chat network (files only below
``sources.file.roots``). It defaults to chat, the narrower one, so a caller that
forgets to say gets the safe answer.
"""
from __future__ import annotations

from bot.sources.fetched import Fetched
from clipboard.config import Config


def kind_of(spec: str) -> str:
    lowered = spec.strip().lower()
    if lowered.startswith(("http://", "https://")):
        return "url"
    if lowered.startswith("cn="):
        return "ldap"
    return "file"


async def fetch(spec: str, config: Config, *, local: bool = False) -> Fetched:
    kind = kind_of(spec)
    if kind == "url":
        from bot.sources import url
        return await url.fetch(spec.strip(), config)
    if kind == "ldap":
        from bot.sources import ldap
        return await ldap.fetch(spec.strip(), config)
    from bot.sources import file
    return await file.fetch(spec.strip(), config, local=local)
