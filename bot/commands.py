"""What each command does. Every handler returns the lines to answer with; none
waits on a worker (deploy returns once the deployment is recorded and started).

Every answer passes the configuration's ``Scrubber`` (URL credentials, configured
secrets). ``clipboard`` also passes one that knows every secret that deployment has
held, so a secret copied under an innocent name stays hidden. ``status`` does not:
it is asked most when the store is busiest, and the errors and step logs it shows
were scrubbed against those secrets before they were stored (clipboard.drive).

Each handler is declared once with ``@command`` (``bot.registry``): its name, help
line, default ACL rule, whether it changes anything, and its CLI subcommand. The
grammar, ``help``, the ACL and the CLI read those declarations (``REGISTRY``), so
adding a command is adding one declared handler here."""
from __future__ import annotations

import logging
import re
from typing import Any

from bot import report, sources
from bot.adapter import Incoming
from bot.deploying import Deployer
from bot.inspection import Inspection
from bot.progress import ClusterProgress
from bot.registry import CONSOLE, EVERYONE, Cli, Command, Registry, arg, command, registry_of
from clipboard import document, redact
from clipboard.approval import Approval
from clipboard.config import Config
from clipboard.engine import Engine
from clipboard.errors import DesignError, GrammarError, JarvisError
from clipboard.pipeline import pipelines
from clipboard.records import StatusAnswer, summarize
from clipboard.run import Source
from clipboard.runner import Runner
from clipboard.store import Store
from clipboard.validate import check_hostname

log = logging.getLogger(__name__)

LABEL_KEY = re.compile(r"^[a-z0-9_-]{1,64}$")
# The CLI's arguments of clipboard, logs and diff. -d N is said #N, which a shell would
# take for a comment.
STEP_QUERY = (arg("host"), arg("steps", nargs="*", metavar="step",
                               help="3, a step name or 3.undo (diff: one or two)"),
              arg("--deployment", "-d", type=int, metavar="N", said="#{}",
                  help="deployment #N of the host (default: its latest)"))


class Commands:
    """Its collaborators are given, not reached for through the bot: the same commands
    serve chat, the console and the CLI."""

    def __init__(self, config: Config, store: Store, engine: Engine, runner: Runner,
                 progress: ClusterProgress, *, bot_name: str) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.runner = runner
        self.progress = progress
        self.bot_name = bot_name
        self.redact_keys = config.limits.redact_keys
        self.scrubber = redact.Scrubber(config.secrets)
        self.inspection = Inspection(store, self.redact_keys)
        self.deployer = Deployer(engine, store, self.redact_keys)

    @property
    def registry(self) -> Registry:
        """The commands this class declares (``bot.registry``)."""
        return registry_of(type(self))

    async def run(self, command: Command, incoming: Incoming) -> list[str]:
        declared = self.registry.get(command.name)
        if declared is None:
            raise GrammarError(f"unknown command {command.name!r}; commands: "
                               f"{', '.join(self.registry.names)}")
        handler = getattr(self, declared.handler)
        return self.scrubber.lines(await handler(command, incoming))

    def _usage(self, command: Command) -> str:
        return self.registry.usage(command.name)

    def _host(self, command: Command) -> str:
        if not command.args:
            raise JarvisError(f"{command.name} needs a hostname: {self._usage(command)}")
        return check_hostname(command.args[0])

    async def load_design(self, spec: str, incoming: Incoming) -> tuple[dict[str, Any], Source]:
        """The design ``spec`` names, read with the rights of whoever asked (chat or local)."""
        fetched = await sources.fetch(spec, self.config, local=incoming.local)
        design = fetched.design
        if design is None:
            design = document.load(fetched.data, max_bytes=self.config.limits.max_bytes,
                                   max_nodes=self.config.limits.max_nodes,
                                   what=f"the design from {fetched.source}")
        return design, Source(fetched.source, fetched.kind, fetched.sha256, fetched.fetched_at)

    @command("deploy", allow=CONSOLE,
             cli=Cli("deploy one design and exit", (
                 arg("source", help="design file, https URL, gist URL or cn=host"),
                 arg("--pipeline", "-p"), arg("--dry-run", action="store_true"),
                 arg("--force", action="store_true", help="redeploy even a production host"))),
             help="deploy <file|https URL|gist URL|cn=host> [pipeline=<name>] [force] "
                  "[--dry-run] — build the host through a pipeline; with force (even past the "
                  "production check) it waits for approve <host> by someone else")
    async def do_deploy(self, command: Command, incoming: Incoming) -> list[str]:
        if len(command.args) != 1:
            raise JarvisError(f"deploy needs exactly one source: {self._usage(command)}")
        unknown = set(command.options) - {"pipeline"}
        if unknown:
            raise JarvisError(f"deploy does not take {', '.join(sorted(unknown))}=")
        design, source = await self.load_design(command.args[0], incoming)
        return (await self.deployer.deploy(command, incoming, design, source)).lines

    async def _cluster(self, name: str) -> str | None:
        """The cluster id a word means (``shop`` = its newest run, ``shop#2``), or None."""
        if "#" in name:
            found = await self.store.latest_cluster(name)
            if found is None:
                raise JarvisError(f"no cluster run {name}")
            return found
        return await self.store.latest_cluster(name.lower())

    @command("approve", allow=CONSOLE,
             help="approve <host> — let a deployment someone else forced run (within "
                  "acl.approval_window; force always waits for a second person)")
    async def do_approve(self, command: Command, incoming: Incoming) -> list[str]:
        """The second person's word on a forced deployment (``clipboard.approval``)."""
        if len(command.args) != 1 or command.flags or command.options:
            raise JarvisError(f"approve takes one host: {self._usage(command)}")
        host = self._host(command)
        deployment = await self.engine.approve(host, by=incoming.identity,
                                               account=incoming.account)
        return [(f"{host}: deployment #{deployment.id} approved by {incoming.identity} "
                 f"(forced by {deployment.requester}); starting: pipeline "
                 f"{deployment.pipeline}, {len(deployment.steps)} steps")]

    @command("status", allow=EVERYONE, read_only=True,
             cli=Cli("status of a host", (arg("host"),)),
             help="status <host|cluster> [role=… provider=… cluster=…] — where a host's latest "
                  "deployment is; a cluster's or a filter's counts, failures first")
    async def do_status(self, command: Command, incoming: Incoming) -> list[str]:
        """``status host``, ``status cluster``, or a filter on labels (role=, provider=,
        cluster=, any short instance value), alone or within a cluster."""
        filters = {k: v.strip().lower() for k, v in command.options.items()}
        cluster_name = filters.pop("cluster", None)
        bad = [k for k in filters if not LABEL_KEY.match(k)]
        if bad:
            raise JarvisError(f"status: {bad[0]!r} is not a label name")
        secret = [k for k in filters if redact.is_secret_key(k, self.redact_keys)]
        if secret:  # never a label; refused by name, so an old stored label confirms nothing
            raise JarvisError(f"status: {secret[0]!r} names a secret, which is never a label")
        if len(command.args) > 1 or (command.args and cluster_name):
            raise JarvisError(f"status takes one host or cluster: {self._usage(command)}")
        if not command.args and not filters and cluster_name is None:
            raise JarvisError(f"status needs a host, a cluster or a filter: {self._usage(command)}")
        name = command.args[0] if command.args else cluster_name
        host, not_a_host = None, None
        if command.args and not filters and name is not None and "#" not in name:
            try:
                host = check_hostname(name)
            except DesignError as exc:
                not_a_host = exc
        key = name if name is None or "#" in name else name.lower()
        found = await self._status_answer(key, filters, host)
        if found.missing:
            if not_a_host is not None:
                raise not_a_host
            raise JarvisError(f"no cluster {'run' if name and '#' in name else 'named'} {name}")
        if found.summary is None:
            held = [found.lock.describe()] if found.lock is not None else []
            if found.deployment is None:
                return [f"{host}: never deployed", *held]
            return [*report.status_lines(found.deployment, found.steps), *held]
        cluster, summary = found.cluster, found.summary
        label = " ".join([*([cluster] if cluster else []),
                          *(f"{k}={v}" for k, v in sorted(filters.items()))])
        if not summary.total:
            return [f"{label}: no deployments match"]
        return report.group_status(label, summary)

    async def _status_answer(self, name: str | None, filters: dict[str, str],
                             host: str | None) -> StatusAnswer:
        """A run the bot is following is summarised from memory, the rest by the store:
        status is asked most while every host is busy, which is when the store's thread
        answers slowest."""
        limit = self.config.clusters.status_lines
        live = frozenset() if filters else self.progress.following()
        if name in live:
            found = StatusAnswer(cluster=name, live=True)
        else:
            found = await self.store.status_of(name, filters, limit, host, live)
        if not found.live:
            return found
        hosts = self.progress.hosts(str(found.cluster))
        if hosts is None:  # the run finished since: the store has every host now
            return await self.store.status_of(name, filters, limit, host)
        found.summary = summarize(hosts, limit)
        return found

    @command("history", allow=EVERYONE, read_only=True,
             cli=Cli("a host's deployments, 10 a page", (arg("host"), arg("page", nargs="?"))),
             help="history <host> [page] — the host's deployments, 10 a page, newest first: "
                  "who, when, from where, how it ended")
    async def do_history(self, command: Command, incoming: Incoming) -> list[str]:
        return await self.inspection.history(self._host(command), command.args[1:])

    @command("clipboard", allow=EVERYONE, read_only=True,
             cli=Cli("a host's clipboard after a step, redacted", STEP_QUERY),
             help="clipboard <host> [<step>] [#deployment] — the clipboard (secrets shown as "
                  "***) after a step (3, its name, or 3.undo); default the latest")
    async def do_clipboard(self, command: Command, incoming: Incoming) -> list[str]:
        return await self.inspection.clipboard(self._host(command), command.args[1:])

    @command("logs", allow=EVERYONE, read_only=True,
             cli=Cli("the stderr a step left, scrubbed of secrets", STEP_QUERY),
             help="logs <host> [<step>] [#deployment] — the stderr a step left (secrets "
                  "scrubbed); default the failed or last step")
    async def do_logs(self, command: Command, incoming: Incoming) -> list[str]:
        return await self.inspection.logs(self._host(command), command.args[1:])

    @command("diff", allow=EVERYONE, read_only=True,
             cli=Cli("the keys a step changed, or between two steps", STEP_QUERY),
             help="diff <host> <step> [<step>] [#deployment] — the keys a step changed, or what "
                  "changed between two steps (a changed secret reads only 'changed')")
    async def do_diff(self, command: Command, incoming: Incoming) -> list[str]:
        return await self.inspection.diff(self._host(command), command.args[1:])

    @command("cancel", allow=CONSOLE,
             help="cancel <host|cluster> — stop the running deployment (its running step is "
                  "killed); a cluster starts no new step, its running steps finish")
    async def do_cancel(self, command: Command, incoming: Incoming) -> list[str]:
        cluster = await self._cluster(command.args[0]) if len(command.args) == 1 else None
        if cluster is not None:
            drained = await self.engine.cancel_cluster(cluster)
            return [(f"{cluster}: cancelling {len(drained)} unfinished hosts: no new steps start, "
                     "running steps finish")]
        host = self._host(command)
        deployment, owner = await self.engine.cancel(host, by=incoming.identity)
        approval = Approval.of(deployment.meta)
        if approval is not None and approval.approved_by is None:
            return [(f"{host}: deployment #{deployment.id} cancelled while it awaited approval; "
                     "nothing ran")]
        if owner is not None:
            return [(f"{host}: asked {owner.describe()}, which drives deployment "
                     f"#{deployment.id}, to cancel it (it looks every "
                     f"{self.engine.lease_seconds / 3:g}s)")]
        return [f"{host}: cancelling deployment #{deployment.id}"]

    @command("retry", allow=CONSOLE,
             help="retry <host|cluster> — run a failed deployment again from the step that "
                  "failed; a cluster retries only its failed hosts")
    async def do_retry(self, command: Command, incoming: Incoming) -> list[str]:
        cluster = await self._cluster(command.args[0]) if len(command.args) == 1 else None
        if cluster is not None:
            retried = await self.engine.retry_cluster(cluster, requester=incoming.identity,
                                                      reply_to=incoming.route())
            parts = [f"{d.hostname} from step {d.current_step}" for d in retried]
            shown = ", ".join(parts[:10]) + (f" and {len(parts) - 10} more" if len(parts) > 10
                                             else "")
            plural = "s" if len(retried) != 1 else ""
            return [f"{cluster}: retrying {len(retried)} host{plural}: {shown}"]
        host = self._host(command)
        deployment = await self.engine.retry(host, requester=incoming.identity,
                                             reply_to=incoming.route())
        attempt = deployment.meta["attempts"][-1]
        how = (f"from step 1 with the design as first fetched, since attempt "
               f"{attempt['attempt']} was {attempt['ended']}" if attempt["after_rollback"]
               else f"from step {deployment.current_step}")
        return [(f"{host}: retrying deployment #{deployment.id} {how} (attempt "
                 f"{deployment.attempt})")]

    @command("lock", allow=CONSOLE, free_text=True,
             help="lock [<host> [reason…]] — no deployment of the host starts until unlock; "
                  "alone: the locks held")
    async def do_lock(self, command: Command, incoming: Incoming) -> list[str]:
        """``lock`` alone lists the locks; ``lock <host> [reason…]`` holds the host."""
        if not command.args:
            held = await self.store.locks()
            return [lock.describe() for lock in held] or ["no host is locked"]
        host = self._host(command)
        lock, new = await self.store.add_lock(host, incoming.identity, command.text)
        if not new:
            return [f"{lock.describe()} already"]
        running = await self.store.active_of(host)
        note = (f"; deployment #{running.id} is running and will finish"
                if running is not None else "")
        return [f"{host}: locked; no deployment of it starts until unlock {host}{note}"]

    @command("unlock", allow=CONSOLE,
             help="unlock <host> — let deployments of the host start again")
    async def do_unlock(self, command: Command, incoming: Incoming) -> list[str]:
        host = self._host(command)
        lock = await self.store.remove_lock(host)
        if lock is None:
            return [f"{host} is not locked"]
        return [(f"{host}: unlocked (it was locked by {lock.owner}"
                 f"{': ' + lock.reason if lock.reason else ''})")]

    @command("pipelines", allow=EVERYONE, read_only=True,
             cli=Cli("list the configured pipelines"),
             help="pipelines — the configured pipelines and their steps")
    async def do_pipelines(self, command: Command, incoming: Incoming) -> list[str]:
        lines = []
        for name, p in sorted(pipelines(self.config).items()):
            rollback = ", rollback on" if p.rollback else ""
            lines.append(f"{name}{rollback}: {' → '.join(s.name for s in p.steps)}")
        return lines or ["no pipelines configured"]

    @command("workers", allow=EVERYONE, read_only=True,
             cli=Cli("list every step jarvis can run"),
             help="workers — every step jarvis can run")
    async def do_workers(self, command: Command, incoming: Incoming) -> list[str]:
        runner = self.runner
        lines = [f"{name} — {info['doc']}" + (f" (undo: {info['undo']})" if info["undo"] else "")
                 for name, info in sorted(runner.tasks.items())]
        lines.append("wait:host <host|role=name> <step|ready> [seconds] — built in: hold this "
                     "host until the other host(s) of its cluster reached that step")
        lines += [f"{path.name}:* — executable {path}" for path in runner.executables()]
        lines += [f"{module}: unavailable ({error})"
                  for module, error in sorted(runner.import_errors.items())]
        return lines

    @command("help", allow=EVERYONE, read_only=True, help="help [command] — this")
    async def do_help(self, command: Command, incoming: Incoming) -> list[str]:
        registry = self.registry
        if command.args:
            name = command.args[0].lower()
            if name not in registry:
                raise JarvisError(f"no command {name!r}; commands: {', '.join(registry.names)}")
            return [registry.usage(name)]
        return [f"address me as '{self.bot_name}: <command>'. Commands:", *registry.help_lines()]


REGISTRY = registry_of(Commands)
"""The bot's commands: what ``bot.grammar``, ``bot.acl`` and ``bot.cli`` read by default."""
