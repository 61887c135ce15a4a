"""What each command does. Every handler returns the lines to answer with; none
waits on a worker (deploy returns once the deployment is recorded and started)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot import report, sources
from bot.adapter import Incoming
from bot.grammar import HELP, Command
from clipboard import document
from clipboard.engine import Source
from clipboard.errors import JarvisError
from clipboard.pipeline import pipelines
from clipboard.validate import check_hostname

if TYPE_CHECKING:
    from bot.core import Bot

log = logging.getLogger(__name__)


class Commands:
    def __init__(self, bot: "Bot") -> None:
        self.bot = bot
        self.config = bot.config
        self.engine = bot.engine
        self.store = bot.store

    async def run(self, command: Command, incoming: Incoming) -> list[str]:
        handler = getattr(self, f"do_{command.name}")
        return await handler(command, incoming)

    def _host(self, command: Command) -> str:
        if not command.args:
            raise JarvisError(f"{command.name} needs a hostname: {HELP[command.name]}")
        return check_hostname(command.args[0])

    async def load_design(self, spec: str) -> tuple[dict[str, Any], Source]:
        fetched = await sources.fetch(spec, self.config)
        design = fetched.design
        if design is None:
            design = document.load(fetched.data, max_bytes=int(self.config.get("clipboard.max_bytes")),
                                   max_nodes=int(self.config.get("clipboard.max_nodes")),
                                   what=f"the design from {fetched.source}")
        return design, Source(fetched.source, fetched.kind, fetched.sha256, fetched.fetched_at)

    async def do_deploy(self, command: Command, incoming: Incoming) -> list[str]:
        if len(command.args) != 1:
            raise JarvisError(f"deploy needs exactly one source: {HELP['deploy']}")
        unknown = set(command.options) - {"pipeline"}
        if unknown:
            raise JarvisError(f"deploy does not take {', '.join(sorted(unknown))}=")
        design, source = await self.load_design(command.args[0])
        plan = self.engine.plan(design, command.options.get("pipeline"))
        if "force" in command.flags:
            plan.clipboard["instance"]["force"] = True
        steps = [s.name for s in plan.pipeline.steps]
        if "dry-run" in command.flags:
            return [f"{plan.hostname}: dry run of pipeline {plan.pipeline.name}, would run "
                    f"{len(steps)} steps: {', '.join(steps)}",
                    *report.clipboard_text(plan.clipboard, self.bot.redact_keys).splitlines()]
        reply_to = {"adapter": incoming.adapter, "target": incoming.reply_to, "nick": incoming.nick,
                    "room": incoming.room}
        deployment = await self.engine.deploy(plan, source, requester=incoming.identity,
                                              reply_to=reply_to)
        return [f"{plan.hostname}: deployment #{deployment.id} started: pipeline "
                f"{plan.pipeline.name}, {len(steps)} steps"]

    async def do_status(self, command: Command, incoming: Incoming) -> list[str]:
        host = self._host(command)
        deployment = await self.store.latest(host)
        if deployment is None:
            return [f"{host}: never deployed"]
        return report.status_lines(deployment, await self.store.steps(deployment.id))

    async def do_history(self, command: Command, incoming: Incoming) -> list[str]:
        host = self._host(command)
        deployments = await self.store.history(host)
        if not deployments:
            return [f"{host}: never deployed"]
        return [f"{host}: {len(deployments)} deployment(s), newest first",
                *(report.history_line(d) for d in deployments)]

    async def do_clipboard(self, command: Command, incoming: Incoming) -> list[str]:
        host = self._host(command)
        deployment = await self.store.latest(host)
        if deployment is None:
            return [f"{host}: never deployed"]
        after = None
        if len(command.args) > 1:
            after = self._step_number(deployment, command.args[1])
        clipboard = await self.store.clipboard(deployment.id, after)
        if clipboard is None:
            return [f"{host}: no clipboard after step {after} in deployment #{deployment.id}"]
        label = "latest" if after is None else f"after step {after}"
        return [f"{host}: clipboard of #{deployment.id}, {label}:",
                *report.clipboard_text(clipboard, self.bot.redact_keys).splitlines()]

    @staticmethod
    def _step_number(deployment: Any, arg: str) -> int:
        if arg.isdigit():
            return int(arg)
        names = [s["step"] for s in deployment.steps]
        if arg in names:
            return names.index(arg) + 1
        raise JarvisError(f"no step {arg!r} in pipeline {deployment.pipeline}: "
                          f"give a number 0–{len(names)} or one of {', '.join(names)}")

    async def do_cancel(self, command: Command, incoming: Incoming) -> list[str]:
        host = self._host(command)
        deployment = await self.engine.cancel(host)
        return [f"{host}: cancelling deployment #{deployment.id}"]

    async def do_retry(self, command: Command, incoming: Incoming) -> list[str]:
        host = self._host(command)
        reply_to = {"adapter": incoming.adapter, "target": incoming.reply_to, "nick": incoming.nick,
                    "room": incoming.room}
        deployment = await self.engine.retry(host, requester=incoming.identity, reply_to=reply_to)
        return [f"{host}: retrying deployment #{deployment.id} from step {deployment.current_step}"]

    async def do_pipelines(self, command: Command, incoming: Incoming) -> list[str]:
        lines = []
        for name, p in sorted(pipelines(self.config).items()):
            rollback = ", rollback on" if p.rollback else ""
            lines.append(f"{name}{rollback}: {' → '.join(s.name for s in p.steps)}")
        return lines or ["no pipelines configured"]

    async def do_workers(self, command: Command, incoming: Incoming) -> list[str]:
        runner = self.engine.runner
        lines = [f"{name} — {info['doc']}" + (f" (undo: {info['undo']})" if info["undo"] else "")
                 for name, info in sorted(runner.tasks.items())]
        lines += [f"{path.name}:* — executable {path}" for path in runner.executables()]
        lines += [f"{module}: unavailable ({error})"
                  for module, error in sorted(runner.import_errors.items())]
        return lines

    async def do_help(self, command: Command, incoming: Incoming) -> list[str]:
        if command.args:
            name = command.args[0].lower()
            if name not in HELP:
                raise JarvisError(f"no command {name!r}; commands: {', '.join(HELP)}")
            return [HELP[name]]
        return [f"address me as '{self.bot.name}: <command>'. Commands:", *HELP.values()]
