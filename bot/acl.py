r"""Who may run which command, from where: ``acl:`` rules of glob patterns.

One rule per command::

    acl:
      deploy: {allow: ["*!*@ops.example.com", "account:alice", "bob@example.com"],
               deny: ["*!*@guest.example.com"], rooms: ["#ops", "ops@conference.example.com", "private"]}

A pattern is a glob in which ``*`` (any run of characters) and ``?`` (one
character) are the only wildcards: every other character means itself, so
``bob[away]!*@*`` names that nick and no character class (IRC nicks may contain
``[]\^{}|``, which ``fnmatch`` would read as syntax). It is compared without regard
to case with the requester's identity (IRC ``nick!user@host``, XMPP bare JID or
``room/nick``, ``console:<user>``) and with ``<adapter>:<identity>`` (so ``xmpp:*``
means anyone on Jabber). A pattern ``account:<name>`` is compared only with the
services account the chat server vouched for (``Incoming.account``), never with a
nick or any other string a client picks. ``deny`` wins over ``allow``. ``rooms``
(empty = anywhere) limits where the command may be said; a private message counts
as the room ``private``.

Every command's default rule is in its declaration (``@command(..., allow=...)``
in ``bot.commands``, see ``bot.registry``), not in the configuration: the
read-only commands are open to everyone, ``deploy``/``approve``/``cancel``/
``retry``/``lock``/``unlock`` to the local console operator until configured.
``history`` and ``clipboard`` are rules like any other (a site may narrow who reads
past deployments and their clipboards); ``status`` stays open by default. A
configured rule overlays its command's default key by key: ``status: {deny: [...]}``
keeps ``status`` open to the rest, ``deploy: {allow: [...]}`` replaces who may
deploy. A rule whose name is neither a command, a flag rule nor an HTTP rule
(``watch``) is refused (``ConfigError``, and ``check-config`` names it): a typo would
otherwise leave the command it meant on its default without a word. A name no command has is denied.

Some words of a command need a rule of their own besides the command's: ``deploy …
force`` needs ``acl.force`` as well as ``acl.deploy`` (``FLAG_RULES``, console only by
default). ``force`` and every command not declared read-only are privileged; the
second person a force waits for is whoever ``acl.approve`` allows, other than the one
who asked (see ``clipboard.approval``).
"""
from __future__ import annotations

import functools
import logging
import re
from typing import Any

from bot.adapter import Incoming
from bot.commands import REGISTRY
from bot.registry import CONSOLE, Command, Registry
from clipboard.errors import ConfigError

log = logging.getLogger(__name__)

PRIVATE_ROOM = "private"
ACCOUNT = "account:"

TEMPLATE = "*"  # the configuration schema's template rule, never a rule itself
# Flags that need a rule of their own (named as the flag) on top of the command's, and
# what that rule allows by default. They are privileged.
FLAG_RULES: dict[str, tuple[str, ...]] = {"force": CONSOLE}
# Rules for what is asked only over HTTP, no chat command: ``watch`` registers, lists and
# deletes webhook watches (``bot.http.watches``). Closed to all by default; privileged.
HTTP_RULES: dict[str, tuple[str, ...]] = {"watch": ()}


def privileged(registry: Registry = REGISTRY) -> frozenset[str]:
    """The rules that change something. An identity the chat network did not verify (a
    Jabber room that hides real JIDs: just ``room/nick``, which anyone may take) never gets
    one, whatever the patterns say; it keeps the read-only commands its patterns allow."""
    return registry.privileged() | frozenset(FLAG_RULES) | frozenset(HTTP_RULES)


def _configured_rules(section: object) -> dict[str, dict[str, Any] | None]:
    """The rules of an ``acl`` section by lower-case name; its settings (a number such as
    ``approval_window``) are no rules, and a section that is no mapping has none (the
    schema says what is wrong with it)."""
    if not isinstance(section, dict):
        return {}
    return {str(name).lower(): rule for name, rule in section.items()
            if name != TEMPLATE and (rule is None or isinstance(rule, dict))}


def rule_problems(section: object, registry: Registry = REGISTRY) -> list[str]:
    """One line per rule of ``section`` that names neither a command nor a flag rule."""
    known = [*registry.names, *FLAG_RULES, *HTTP_RULES]
    return [f"acl.{name} is not a command; the rules are for: {', '.join(known)}"
            for name in _configured_rules(section) if name not in known]


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = [".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, text: str) -> bool:
    """``pattern`` matches the whole of ``text``: ``*`` and ``?`` are wildcards, all else literal."""
    return _compiled(pattern).fullmatch(text) is not None


def _matches(pattern: str, candidates: list[str], account: str | None = None) -> bool:
    if pattern[:len(ACCOUNT)].lower() == ACCOUNT:
        return account is not None and glob_matches(pattern[len(ACCOUNT):], account)
    return any(glob_matches(pattern, candidate) for candidate in candidates)


def _patterns(rule: dict[str, Any], key: str) -> list[str]:
    value = rule.get(key) or []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


class Acl:
    """The ``acl`` configuration section over the declared defaults, ready to answer
    ``denial``."""

    def __init__(self, rules: dict[str, Any] | None, registry: Registry = REGISTRY) -> None:
        problems = rule_problems(rules, registry)
        if problems:
            raise ConfigError("; ".join(problems))
        self.privileged = privileged(registry)
        self.rules: dict[str, dict[str, Any]] = {
            name: {"allow": list(allow), "deny": [], "rooms": []}
            for name, allow in {**registry.acl_defaults(), **FLAG_RULES, **HTTP_RULES}.items()}
        for name, rule in _configured_rules(rules).items():
            written = {key: value for key, value in (rule or {}).items() if value is not None}
            self.rules[name] = {**self.rules[name], **written}

    @staticmethod
    def candidates(incoming: Incoming) -> list[str]:
        """Every string a pattern other than ``account:<name>`` may match for this requester;
        those are compared with ``incoming.account`` alone, what the server vouched for."""
        names = [incoming.identity]
        if not incoming.identity.startswith(incoming.adapter + ":"):
            names.append(f"{incoming.adapter}:{incoming.identity}")
        return names

    def denial(self, command: str, incoming: Incoming) -> str | None:
        """None when ``incoming`` may run ``command``, else one line naming the rule that denied."""
        command = command.lower()
        who = incoming.identity
        if command in self.privileged and not incoming.verified:
            why = incoming.unverified_reason or "the chat network did not verify who you are"
            return f"{command} refused for {who}: {why}"
        rule = self.rules.get(command)
        if rule is None:
            return f"{command} denied for {who}: no rule acl.{command} (add one to allow it)"
        names = self.candidates(incoming)
        for pattern in _patterns(rule, "deny"):
            if _matches(pattern, names, incoming.account):
                return f"{command} denied for {who}: rule acl.{command}.deny matches {pattern!r}"
        allow = _patterns(rule, "allow")
        if not any(_matches(pattern, names, incoming.account) for pattern in allow):
            return f"{command} denied for {who}: rule acl.{command} allows only {allow}"
        rooms = _patterns(rule, "rooms")
        if rooms:
            room = incoming.room if incoming.room is not None else PRIVATE_ROOM
            if not any(_matches(pattern, [room]) for pattern in rooms):
                return f"{command} denied in {room}: rule acl.{command} allows it only in {rooms}"
        return None

    def refusal(self, command: Command, incoming: Incoming) -> str | None:
        """``denial`` of the command, then of each rule its flags need (``force``)."""
        for rule in (command.name, *(f for f in sorted(command.flags) if f in FLAG_RULES)):
            reason = self.denial(rule, incoming)
            if reason is not None:
                return reason
        return None


_OTHER_ADAPTER = re.compile(r"^[a-z][a-z0-9_-]*:", re.IGNORECASE)


def _grants_by_irc_name(pattern: str) -> bool:
    """Whether an IRC client could meet ``pattern`` from any host by choosing its nick and
    user name, and the pattern names someone (``*!*@*`` opens to all, knowingly)."""
    body = pattern[4:] if pattern[:4].lower() == "irc:" else pattern
    if body is pattern and _OTHER_ADAPTER.match(body):
        return False  # account:, xmpp:, console: ...
    left, at, host = body.rpartition("@")
    if not at:
        if not body.endswith("*"):
            return False
        left, host = body, "*"  # the trailing * covers "@host" too
    if host.strip("*?"):
        return False  # the host narrows it, and the host is the server's word
    if "!" not in left and "*" not in left:
        return False  # cannot match nick!user: not an IRC pattern
    return bool(left.replace("!", "").strip("*?"))


def spoofable_grants(acl_section: dict[str, Any], registry: Registry = REGISTRY) -> list[str]:
    """One warning line per allow pattern of a privileged command that grants by IRC nick
    or user name only: both are what the client asks for, so anyone can claim them. (The
    declared defaults grant none.)"""
    warnings = []
    changes = privileged(registry)
    for command, rule in (acl_section or {}).items():
        if str(command).lower() not in changes or not isinstance(rule, dict):
            continue
        for pattern in _patterns(rule, "allow"):
            if _grants_by_irc_name(pattern):
                warnings.append(
                    f"acl.{command}.allow {pattern!r} grants {command} by IRC nick/user name, which any "
                    "client may take (only the host is set by the server); use 'account:<name>', the "
                    "services account the server verifies, or narrow the host")
    return warnings
