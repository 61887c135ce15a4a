"""Chat commands declared once: ``@command`` on a handler, and the registry that reads them.

A command used to be spread over five places (the grammar's list of names and of
free-text commands, its help table, the handler, the ACL defaults in
``defaults.yaml`` and the CLI's argparse). Now one declaration on the handler
says all of it, as Errbot's ``@botcmd`` does::

    @command("status", help="status <host> — where its latest deployment is",
             allow=EVERYONE, read_only=True, cli=Cli("status of a host", (arg("host"),)))
    async def do_status(self, command: Command, incoming: Incoming) -> list[str]: ...

``registry_of(cls)`` collects the declarations of a class and its bases, in the
order they were written (a subclass's own come after its bases'; one that
re-declares a name replaces it in place). The grammar (``bot.grammar.parse``:
known names, free text), ``help``, the ACL (``bot.acl``: default rules, which
commands are privileged) and the CLI's parser (``bot.cli``) all read a registry,
so a new declaration is a new command everywhere at once.

A command is privileged (closed to identities the chat network did not verify,
whatever the patterns say) unless it declares ``read_only=True``: forgetting to
say so fails closed.

The bot's own registry is ``bot.commands.REGISTRY``, every reader's default; a test
or an extension passes another. ``Command`` (one parsed line) lives here so that the
handlers and the grammar share it without importing each other.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

MARK = "__jarvis_command__"

EVERYONE = ("*",)
CONSOLE = ("console:*",)


@dataclass
class Command:
    """One parsed line: the command's name, its words, ``key=value`` options and flags."""

    name: str
    args: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    text: str = ""  # the free text of a free-text command


@dataclass(frozen=True)
class Arg:
    """One argument of a CLI subcommand: what ``ArgumentParser.add_argument`` takes, and
    how its value is said to the chat command (``said``, a format of one value)."""

    names: tuple[str, ...]
    options: Mapping[str, Any]
    said: str = "{}"

    @property
    def dest(self) -> str:
        """Where argparse puts the value (its own rule: the first long option's name)."""
        if "dest" in self.options:
            return str(self.options["dest"])
        longs = [name for name in self.names if name.startswith("--")]
        return (longs or list(self.names))[0].lstrip("-").replace("-", "_")


def arg(*names: str, said: str = "{}", **options: Any) -> Arg:
    return Arg(names, options, said)


@dataclass(frozen=True)
class Cli:
    """The command's ``jarvis <name>`` subcommand: its one-line summary and arguments,
    which the CLI says, in this order, as the chat command's words (``bot.cli``)."""

    summary: str
    args: tuple[Arg, ...] = ()


@dataclass(frozen=True)
class Declaration:
    """Everything jarvis knows of one command besides what its handler does."""

    name: str
    help: str
    allow: tuple[str, ...]
    read_only: bool = False
    free_text: bool = False
    cli: Cli | None = None
    handler: str = ""  # the handler's attribute name, filled in by registry_of

    @property
    def privileged(self) -> bool:
        return not self.read_only


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[list[str]]])


def command(name: str, *, help: str, allow: tuple[str, ...], read_only: bool = False,
            free_text: bool = False, cli: Cli | None = None) -> Callable[[Handler], Handler]:
    """Declare the decorated handler as the chat command ``name``.

    ``help`` is its line in ``help`` (and in the errors that quote its usage);
    ``allow`` the patterns its default ACL rule allows (``acl.<name>`` in a
    configuration overrides it key by key); ``read_only`` says it changes nothing
    (otherwise it is privileged); ``free_text`` keeps the words after its first
    argument as said (a lock's reason may hold an apostrophe, ``force`` or
    ``x=y``); ``cli`` gives it a ``jarvis <name>`` subcommand.
    """
    declared = Declaration(name.lower(), help, tuple(allow), read_only, free_text, cli)

    def mark(handler: Handler) -> Handler:
        setattr(handler, MARK, declared)
        return handler
    return mark


class Registry:
    """The declared commands, in declaration order."""

    def __init__(self, declarations: Iterable[Declaration]) -> None:
        self._by_name = {d.name: d for d in declarations}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Declaration]:
        return iter(self._by_name.values())

    def get(self, name: str) -> Declaration | None:
        return self._by_name.get(name.lower())

    def usage(self, name: str) -> str:
        """The help line of the command ``name`` (a declared one)."""
        return self._by_name[name].help

    def help_lines(self) -> list[str]:
        return [d.help for d in self._by_name.values()]

    def acl_defaults(self) -> dict[str, tuple[str, ...]]:
        """Command name -> the patterns its default rule allows."""
        return {d.name: d.allow for d in self._by_name.values()}

    def privileged(self) -> frozenset[str]:
        return frozenset(d.name for d in self._by_name.values() if d.privileged)

    def subcommands(self) -> list[tuple[str, Cli]]:
        """(name, its CLI subcommand) of every command that has one."""
        return [(d.name, d.cli) for d in self._by_name.values() if d.cli is not None]


_BUILT: dict[type, Registry] = {}


def registry_of(cls: type) -> Registry:
    """The commands ``cls`` and its bases declare (see the module's docstring for order),
    collected once per class."""
    built = _BUILT.get(cls)
    if built is None:
        found: dict[str, Declaration] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                declared = getattr(value, MARK, None)
                if isinstance(declared, Declaration):
                    found[declared.name] = dataclasses.replace(declared, handler=attribute)
        built = _BUILT[cls] = Registry(found.values())
    return built
