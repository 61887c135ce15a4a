"""The command grammar: addressing, and splitting a line into command and arguments.

    jarvis: deploy <source> [pipeline=<name>] [force] [--dry-run]
    jarvis, status <host>
    status role=web cluster=shop       (filters: key=value words)
    status <host>                      (private message or console: no address needed)

Which words are commands, and which of them keep their words as free text, is
what the commands declare (``bot.registry``); ``parse`` reads the bot's own
(``bot.commands``) unless given another registry.
"""
from __future__ import annotations

import re
import shlex

from bot.commands import REGISTRY
from bot.registry import Command, Registry
from clipboard.errors import GrammarError

__all__ = ["Command", "GrammarError", "parse", "strip_address"]


def strip_address(text: str, name: str, private: bool) -> str | None:
    """The command part of ``text``, or None when it is not meant for the bot."""
    match = re.match(rf"^\s*@?{re.escape(name)}\s*[:,]\s*(.*)$", text, re.IGNORECASE | re.DOTALL)
    if match:
        return match.group(1).strip()
    return text.strip() if private else None


def parse(text: str, registry: Registry = REGISTRY) -> Command:
    """``text`` as one of ``registry``'s commands (default: the bot's, ``bot.commands``)."""
    words = text.split(None, 2)
    declared = registry.get(words[0]) if words else None
    if declared is not None and declared.free_text:
        return Command(declared.name, words[1:2], text=" ".join(words[2:]).strip())
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise GrammarError(f"cannot parse the line: {exc}") from None
    if not words:
        raise GrammarError("say a command; try: help")
    name = words[0].lower()
    if name not in registry:
        raise GrammarError(f"unknown command {words[0]!r}; commands: {', '.join(registry.names)}")
    command = Command(name)
    for word in words[1:]:
        if word.startswith("--"):
            command.flags.add(word[2:].lower())
        elif "=" in word and not word.lower().startswith("cn=") and "://" not in word:
            key, _, value = word.partition("=")
            command.options[key.lower()] = value
        elif word.lower() in ("force",):
            command.flags.add(word.lower())
        else:
            command.args.append(word)
    return command
