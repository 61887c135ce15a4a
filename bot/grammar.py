"""The command grammar: addressing, and splitting a line into command and arguments.

    jarvis: deploy <source> [pipeline=<name>] [force] [--dry-run]
    jarvis, status <host>
    status role=web cluster=shop       (filters: key=value words)
    status <host>                      (private message or console: no address needed)
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from clipboard.errors import JarvisError

COMMANDS = ("deploy", "approve", "status", "history", "clipboard", "logs", "diff", "cancel",
            "retry", "lock", "unlock", "pipelines", "workers", "help")
# Commands whose words after the first argument are free text, kept as said (a reason
# may hold an apostrophe, "force" or "x=y").
FREE_TEXT = ("lock",)


class GrammarError(JarvisError):
    """A line that is addressed to the bot but cannot be understood."""


@dataclass
class Command:
    name: str
    args: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    text: str = ""  # the free text of a FREE_TEXT command


def strip_address(text: str, name: str, private: bool) -> str | None:
    """The command part of ``text``, or None when it is not meant for the bot."""
    match = re.match(rf"^\s*@?{re.escape(name)}\s*[:,]\s*(.*)$", text, re.IGNORECASE | re.DOTALL)
    if match:
        return match.group(1).strip()
    return text.strip() if private else None


def parse(text: str) -> Command:
    words = text.split(None, 2)
    if words and words[0].lower() in FREE_TEXT:
        return Command(words[0].lower(), words[1:2], text=" ".join(words[2:]).strip())
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise GrammarError(f"cannot parse the line: {exc}") from None
    if not words:
        raise GrammarError("say a command; try: help")
    name = words[0].lower()
    if name not in COMMANDS:
        raise GrammarError(f"unknown command {words[0]!r}; commands: {', '.join(COMMANDS)}")
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


HELP = {
    "deploy": "deploy <file|https URL|gist URL|cn=host> [pipeline=<name>] [force] [--dry-run] "
              "— build the host through a pipeline; with force (even past the production "
              "check) it waits for approve <host> by someone else",
    "approve": "approve <host> — let a deployment someone else forced run (within "
               "acl.approval_window; force always waits for a second person)",
    "status": "status <host|cluster> [role=… provider=… cluster=…] — where a host's latest "
              "deployment is; a cluster's or a filter's counts, failures first",
    "history": "history <host> [page] — the host's deployments, 10 a page, newest first: who, "
               "when, from where, how it ended",
    "clipboard": "clipboard <host> [<step>] [#deployment] — the clipboard (secrets shown as ***) "
                 "after a step (3, its name, or 3.undo); default the latest",
    "logs": "logs <host> [<step>] [#deployment] — the stderr a step left (secrets scrubbed); "
            "default the failed or last step",
    "diff": "diff <host> <step> [<step>] [#deployment] — the keys a step changed, or what "
            "changed between two steps (a changed secret reads only 'changed')",
    "cancel": "cancel <host|cluster> — stop the running deployment (its running step is killed); "
              "a cluster starts no new step, its running steps finish",
    "retry": "retry <host|cluster> — run a failed deployment again from the step that failed; "
             "a cluster retries only its failed hosts",
    "lock": "lock [<host> [reason…]] — no deployment of the host starts until unlock; "
            "alone: the locks held",
    "unlock": "unlock <host> — let deployments of the host start again",
    "pipelines": "pipelines — the configured pipelines and their steps",
    "workers": "workers — every step jarvis can run",
    "help": "help [command] — this",
}
