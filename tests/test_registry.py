"""Commands declared once (``bot.registry``): one ``@command`` on a handler is the
command in the grammar, in ``help``, in the ACL's defaults and in the CLI, and an
``acl`` rule for a name no command has is refused. Pure logic: fast tier."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot import cli
from bot.acl import FLAG_RULES, HTTP_RULES, Acl, rule_problems
from bot.adapter import Incoming
from bot.commands import REGISTRY, Commands
from bot.grammar import parse
from bot.registry import CONSOLE, EVERYONE, Cli, Command, arg, command, registry_of
from clipboard import config as config_mod
from clipboard.errors import ConfigError, GrammarError, JarvisError

ROOT = Path(__file__).resolve().parents[1]
IRC = Incoming(adapter="irc", identity="alice!a@ops.example.com", text="", reply_to="#ops",
               room="#ops", nick="alice")
CONSOLE_USER = Incoming(adapter="console", identity="console:root", text="", reply_to="console")
HIDDEN = Incoming(adapter="xmpp", identity="ops@conference.example.com/alice", text="",
                  reply_to="ops@conference.example.com", room="ops@conference.example.com",
                  verified=False, unverified_reason="the room hides real JIDs")


class Extra(Commands):
    """The bot's commands and two more, each declared once and nowhere else."""

    @command("ping", allow=EVERYONE, read_only=True, cli=Cli("answer pong", (arg("target"),)),
             help="ping <target> — answers pong")
    async def do_ping(self, command: Command, incoming: Incoming) -> list[str]:
        return [f"pong {command.args[0]}"]

    @command("note", allow=CONSOLE, free_text=True, help="note <host> [text…] — a note")
    async def do_note(self, command: Command, incoming: Incoming) -> list[str]:
        return [f"{command.args[0]}: {command.text}"]


EXTRA = registry_of(Extra)


def extra_commands() -> Extra:
    """Only ``help`` and the new handlers are run: no store, engine or runner is needed."""
    config = config_mod.Config(config_mod.merge(config_mod.defaults(), {}))
    none: Any = None
    return Extra(config, none, none, none, none, bot_name="jarvis")


def test_a_declaration_alone_adds_a_command_to_the_grammar() -> None:
    assert parse("PING web1", EXTRA) == Command("ping", ["web1"])
    assert parse("note web1 it's x=y force", EXTRA) == Command("note", ["web1"],
                                                                text="it's x=y force")
    with pytest.raises(GrammarError, match=r"unknown command 'ping'; commands: deploy"):
        parse("ping web1")                          # the bot's own registry is untouched
    with pytest.raises(GrammarError, match=r"commands: deploy, .*, help, ping, note$"):
        parse("frobnicate", EXTRA)


def test_a_declaration_alone_adds_a_command_to_help_and_dispatch() -> None:
    commands = extra_commands()
    lines = asyncio.run(commands.run(parse("help", EXTRA), CONSOLE_USER))
    assert lines[-2:] == ["ping <target> — answers pong", "note <host> [text…] — a note"]
    assert asyncio.run(commands.run(parse("help ping", EXTRA), CONSOLE_USER)) == [
        "ping <target> — answers pong"]
    assert asyncio.run(commands.run(parse("ping web1", EXTRA), CONSOLE_USER)) == ["pong web1"]


def test_a_declaration_alone_gives_a_command_its_default_acl_rule() -> None:
    acl = Acl({}, EXTRA)
    assert acl.denial("ping", IRC) is None
    assert acl.denial("ping", HIDDEN) is None                       # read-only: not privileged
    assert acl.denial("note", CONSOLE_USER) is None
    assert acl.denial("note", IRC) == (
        "note denied for alice!a@ops.example.com: rule acl.note allows only ['console:*']")
    opened = Acl({"note": {"allow": ["*"]}}, EXTRA)                  # a site may open it
    assert opened.denial("note", IRC) is None
    assert opened.denial("note", HIDDEN) == (                       # not read-only: privileged
        "note refused for ops@conference.example.com/alice: the room hides real JIDs")


def test_a_declaration_alone_adds_a_cli_subcommand() -> None:
    args = cli._parser(EXTRA).parse_args(["ping", "web1", "--config", "x.yaml"])
    assert (args.command, args.config) == ("ping", "x.yaml")
    assert cli._words(args, dict(EXTRA.subcommands())["ping"]) == ["web1"]
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["ping", "web1"])                 # not a command of the bot


@pytest.mark.parametrize("argv, words", [
    (["status", "web1"], ["web1"]),
    (["history", "web1", "2"], ["web1", "2"]),
    (["history", "web1"], ["web1"]),
    (["diff", "web1", "3", "4.undo", "-d", "12"], ["web1", "3", "4.undo", "#12"]),
    (["logs", "web1", "--deployment", "0"], ["web1", "#0"]),
    (["workers"], []),
])
def test_the_cli_says_a_subcommand_as_the_chat_command(argv: list[str], words: list[str]) -> None:
    args = cli._parser().parse_args(argv)
    assert cli._words(args, dict(REGISTRY.subcommands())[argv[0]]) == words


def test_a_subclass_redeclaring_a_command_replaces_it_in_place() -> None:
    class Quiet(Commands):
        @command("status", allow=CONSOLE, read_only=True, help="status — console only here")
        async def do_status(self, command: Command, incoming: Incoming) -> list[str]:
            return ["quiet"]

    quiet = registry_of(Quiet)
    assert quiet.names == REGISTRY.names
    assert quiet.usage("status") == "status — console only here"
    assert Acl({}, quiet).denial("status", IRC) is not None
    assert Acl({}, REGISTRY).denial("status", IRC) is None


def test_the_bot_reads_its_declarations_everywhere() -> None:
    assert registry_of(Commands) is REGISTRY
    acl = Acl({})
    for declared in REGISTRY:
        assert acl.rules[declared.name]["allow"] == list(declared.allow)
        assert (declared.name in acl.privileged) is not declared.read_only
    assert acl.rules["force"]["allow"] == ["console:*"] and "force" in acl.privileged
    assert [name for name, _ in REGISTRY.subcommands()] == [
        "deploy", "status", "history", "clipboard", "logs", "diff", "pipelines", "workers"]


def test_the_example_shows_the_declared_defaults() -> None:
    """config.example.yaml lists every rule with its default; kept in step with the
    declarations here, as test_cli keeps it in step with defaults.yaml."""
    example = config_mod.read_file(ROOT / "config.example.yaml")["acl"]
    rules = {name: rule for name, rule in example.items() if isinstance(rule, dict)}
    declared = {**REGISTRY.acl_defaults(), **FLAG_RULES, **HTTP_RULES}
    assert sorted(rules) == sorted(declared)
    assert {name: tuple(rule["allow"]) for name, rule in rules.items()} == declared


def test_the_template_no_longer_holds_the_defaults() -> None:
    assert set(config_mod.defaults()["acl"]) == {"*", "approval_window"}


def test_a_rule_written_in_part_keeps_the_rest_of_the_declared_default(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text("acl:\n  deploy: {rooms: ['#ops']}\n  status: {allow: []}\n  lock: ~\n")
    acl = Acl(config_mod.load(path, export=False).section("acl"))
    assert acl.denial("deploy", Incoming(adapter="console", identity="console:root", text="",
                                         reply_to="console", room="#ops")) is None
    assert acl.denial("deploy", CONSOLE_USER) == (
        "deploy denied in private: rule acl.deploy allows it only in ['#ops']")
    assert acl.denial("status", IRC) == (                      # an empty list closes it
        "status denied for alice!a@ops.example.com: rule acl.status allows only []")
    assert acl.denial("lock", CONSOLE_USER) is None            # null: the declared default


def test_an_acl_rule_for_no_command_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as refused:
        Acl({"deplyo": {"allow": ["*"]}, "approval_window": 60})
    assert str(refused.value) == (
        "acl.deplyo is not a command; the rules are for: deploy, approve, status, history, "
        "clipboard, logs, diff, cancel, retry, lock, unlock, pipelines, workers, help, force, "
        "watch")
    assert isinstance(refused.value, JarvisError)
    assert rule_problems({"DEPLOY": {}, "force": None, "approval_window": 5}) == []
    assert rule_problems({"ping": {}}, EXTRA) == []
    assert [p.split(";")[0] for p in rule_problems({"ping": {}, "x": None})] == [
        "acl.ping is not a command", "acl.x is not a command"]
    assert rule_problems(["not", "a", "mapping"]) == []        # the schema reports that


def test_grammar_error_is_a_jarvis_error_and_no_value_error() -> None:
    assert issubclass(GrammarError, JarvisError) and not issubclass(GrammarError, ValueError)
    from bot import grammar
    assert grammar.GrammarError is GrammarError
