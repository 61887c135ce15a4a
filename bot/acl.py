"""Who may run which command, from where: ``acl:`` rules of glob patterns.

One rule per command::

    acl:
      deploy: {allow: ["*!*@ops.example.com", "account:alice", "bob@example.com"],
               deny: ["*!*@guest.example.com"], rooms: ["#ops", "ops@conference.example.com", "private"]}

A pattern is an ``fnmatch`` glob, compared without regard to case, with
the requester's identity (IRC ``nick!user@host``, XMPP bare JID or ``room/nick``,
``console:<user>``), with ``<adapter>:<identity>`` (so ``xmpp:*`` means anyone on
Jabber) and, when services told it, with ``account:<name>``. ``deny`` wins over
``allow``. ``rooms`` (empty = anywhere) limits where the command may be said;
a private message counts as the room ``private``. A command with no rule is
denied, so a new command is closed until someone opens it.

The embedded defaults open the read-only commands to everyone and keep
``deploy``/``cancel``/``retry`` to the local console operator until configured.
"""
from __future__ import annotations

import fnmatch
import logging
from typing import Any

from bot.adapter import Incoming

log = logging.getLogger(__name__)

PRIVATE_ROOM = "private"

# Commands that change something. An identity the chat network did not verify (a Jabber
# room that hides real JIDs: just ``room/nick``, which anyone may take) never gets one,
# whatever the patterns say; it keeps the read-only commands its patterns allow.
PRIVILEGED = frozenset({"deploy", "cancel", "retry", "lock", "unlock", "approve"})


def _matches(pattern: str, candidates: list[str]) -> bool:
    pattern = pattern.lower()
    return any(fnmatch.fnmatchcase(candidate.lower(), pattern) for candidate in candidates)


def _patterns(rule: dict[str, Any], key: str) -> list[str]:
    value = rule.get(key) or []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


class Acl:
    """The ``acl`` configuration section, ready to answer ``denial``."""

    def __init__(self, rules: dict[str, Any]) -> None:
        self.rules: dict[str, dict[str, Any]] = {
            str(command).lower(): rule for command, rule in (rules or {}).items()
            if command != "*" and isinstance(rule, dict)}

    @staticmethod
    def candidates(incoming: Incoming) -> list[str]:
        """Every string a pattern may match for this requester."""
        names = [incoming.identity]
        if not incoming.identity.startswith(incoming.adapter + ":"):
            names.append(f"{incoming.adapter}:{incoming.identity}")
        if incoming.account:
            names.append(f"account:{incoming.account}")
        return names

    def denial(self, command: str, incoming: Incoming) -> str | None:
        """None when ``incoming`` may run ``command``, else one line naming the rule that denied."""
        command = command.lower()
        who = incoming.identity
        if command in PRIVILEGED and not incoming.verified:
            why = incoming.unverified_reason or "the chat network did not verify who you are"
            return f"{command} refused for {who}: {why}"
        rule = self.rules.get(command)
        if rule is None:
            return f"{command} denied for {who}: no rule acl.{command} (add one to allow it)"
        names = self.candidates(incoming)
        for pattern in _patterns(rule, "deny"):
            if _matches(pattern, names):
                return f"{command} denied for {who}: rule acl.{command}.deny matches {pattern!r}"
        allow = _patterns(rule, "allow")
        if not any(_matches(pattern, names) for pattern in allow):
            return f"{command} denied for {who}: rule acl.{command} allows only {allow}"
        rooms = _patterns(rule, "rooms")
        if rooms:
            room = incoming.room if incoming.room is not None else PRIVATE_ROOM
            if not any(_matches(pattern, [room]) for pattern in rooms):
                return f"{command} denied in {room}: rule acl.{command} allows it only in {rooms}"
        return None
