"""The ``jarvis`` command line.

    jarvis                          the bot on its embedded default (console, SQLite, local)
    jarvis run --config FILE        the bot as configured (IRC, XMPP, console...)
    jarvis deploy FILE [--pipeline P] [--dry-run]   one deployment, progress on stdout
    jarvis status HOST | history HOST [PAGE] | workers | check-config FILE
    jarvis worker [--queues Q1,Q2] [--concurrency N] [--hostname NAME]   a Celery worker
    jarvis clipboard|logs HOST [STEP] [-d N] | diff HOST STEP [STEP] [-d N]

A chat command's subcommand is declared with the command (``cli=`` of ``@command`` in
``bot.commands``) and runs the same handler: its arguments are said back as the chat
command's words, as the declaration says them (``_words``). Subcommands of the CLI
alone (``run``, ``check-config``) are added here, in ``_parser`` and ``main``.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bot import check_config, report
from bot.adapter import Incoming
from bot.app import Jarvis
from bot.commands import REGISTRY
from bot.console import ConsoleAdapter
from bot.registry import Cli, Command, Registry
from clipboard import config as config_mod
from clipboard import redact
from clipboard.errors import JarvisError
from clipboard.records import ACTIVE, SUCCEEDED

log = logging.getLogger(__name__)


def _parser(registry: Registry = REGISTRY) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", help="configuration file (default: embedded default)")
    common.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default)")
    parser = argparse.ArgumentParser(prog="jarvis", parents=[common],
                                     description="chat-ops deployment bot")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", parents=[common], help="run the bot")
    for name, cli in registry.subcommands():  # the chat commands that have one
        command = sub.add_parser(name, parents=[common], help=cli.summary)
        for argument in cli.args:
            command.add_argument(*argument.names, **argument.options)
    check = sub.add_parser("check-config", parents=[common], help="validate a configuration file")
    check.add_argument("file")
    worker = sub.add_parser("worker", parents=[common], help="run steps for a Celery-backed bot")
    worker.add_argument("--queues", "-Q", default="", help="queues to serve, comma-separated "
                        "(default: runner.celery.default_queue)")
    worker.add_argument("--concurrency", type=int, default=8, help="steps at once (default 8)")
    worker.add_argument("--hostname", "-n", help="worker name (default: celery@<host>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "check-config":
            return asyncio.run(_check_config(args.file))
        config = config_mod.load(args.config)
        if args.command == "worker":
            from clipboard import celery_worker  # Celery is imported only where it is used
            return celery_worker.serve(
                config, queues=[q for q in args.queues.split(",") if q],
                concurrency=args.concurrency, hostname=args.hostname, loglevel=args.log_level)
        if args.command in (None, "run"):
            return asyncio.run(_serve(config))
        if args.command == "deploy":
            return asyncio.run(_deploy(config, args))
        return asyncio.run(_query(config, args))
    except JarvisError as exc:  # may quote a source URL, credentials and all
        print(f"jarvis: {redact.scrub_urls(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class _Printer(ConsoleAdapter):
    """The one-shot CLI's chat: answers and announcements printed, no input read."""

    async def start(self, deliver: object) -> None:
        return None


async def _check_config(path: str) -> int:
    found = await check_config.check(path)
    out, err = check_config.report_lines(path, found)
    for line in out:
        print(line)
    for line in err:
        print(f"jarvis: {line}", file=sys.stderr)
    return check_config.exit_status(found)


async def _serve(config: config_mod.Config) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Jarvis(config, role="jarvis run", drive=True, adopt=True) as jarvis:
        console = jarvis.adapter("console")
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        if isinstance(console, ConsoleAdapter) and len(jarvis.bot.adapters) == 1:
            waiters.append(asyncio.create_task(_console_done(jarvis, console)))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    return 0


async def _console_done(jarvis: Jarvis, console: ConsoleAdapter) -> None:
    """End of console input: let the running deployments finish, then stop."""
    await console.closed.wait()
    while jarvis.busy:
        await asyncio.sleep(0.1)


async def _deploy(config: config_mod.Config, args: argparse.Namespace) -> int:
    printer = _Printer({}, config.bot.name)
    flags = {"dry-run"} if args.dry_run else set()
    if args.force:
        flags.add("force")
    options = {"pipeline": args.pipeline} if args.pipeline else {}
    async with Jarvis(config, role="jarvis deploy", adapters=[printer],
                      drive=not args.dry_run, catalog=True) as jarvis:
        jarvis.bot.verbose = True
        lines = await jarvis.commands.run(Command("deploy", [args.source], options, flags),
                                          _incoming(printer))
        printer.send("console", "\n".join(lines))
        if args.dry_run:
            return 0
        runs = list(jarvis.engine.running.values())  # one host, or every host of a cluster
        await asyncio.gather(*(run.task for run in runs if run.task is not None))
        for run in runs:
            steps = await jarvis.store.steps(run.deployment.id)
            prefix = f"{run.deployment.hostname} " if len(runs) > 1 else ""
            for line in report.status_lines(run.deployment, steps)[1:]:
                printer.send("console", prefix + line)
        return 0 if all(run.deployment.state in SUCCEEDED for run in runs) else 1


async def _query(config: config_mod.Config, args: argparse.Namespace) -> int:
    printer = _Printer({}, config.bot.name)
    async with Jarvis(config, role=f"jarvis {args.command}", adapters=[printer],
                      catalog=args.command == "workers") as jarvis:
        words = _words(args, dict(REGISTRY.subcommands())[args.command])
        lines = await jarvis.commands.run(Command(args.command, words), _incoming(printer))
        printer.send("console", "\n".join(lines))
        if args.command == "status":
            deployment = await jarvis.store.latest(args.host)
            return 0 if deployment is not None and (deployment.state in SUCCEEDED
                                                    or deployment.state in ACTIVE) else 1
        return 0


def _words(args: argparse.Namespace, cli: Cli) -> list[str]:
    """The chat command's words for a subcommand's arguments, as their declaration says
    them, in its order."""
    words = []
    for argument in cli.args:
        value = getattr(args, argument.dest, None)
        for one in value if isinstance(value, list) else [value]:
            if one is not None and one is not False and one != "":
                words.append(argument.said.format(one))
    return words


def _incoming(printer: _Printer) -> Incoming:
    return Incoming(adapter=printer.name, identity=printer.identity, text="",
                    reply_to="console", local=True)


if __name__ == "__main__":
    sys.exit(main())
