"""What ``deploy`` does once its design is read — plan it, then dry-run it or start it —
for chat's command and the HTTP API's deploy of a design in a request body alike, so
both meet the same validation; and what it started, as data.

Chat says the lines. The API answers with the deployment or the cluster run that
started and points its ``Location`` at it, which it reads from ``Deployed`` rather
than from the words of the lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot import report
from bot.adapter import Incoming
from bot.registry import Command
from clipboard import cluster as cluster_mod
from clipboard.engine import Engine
from clipboard.errors import JarvisError
from clipboard.records import State
from clipboard.run import Source
from clipboard.store import Store


@dataclass(frozen=True)
class Deployed:
    """A deploy's answer, and what it started: one deployment (running, or awaiting
    approval), a cluster run, or nothing (a dry run)."""

    lines: list[str]
    deployment_id: int | None = None
    cluster_id: str | None = None


class Deployer:
    """Given the engine and the store, not reached for through the bot: ``Commands``
    holds one, and the HTTP API calls it through that one."""

    def __init__(self, engine: Engine, store: Store, redact_keys: tuple[str, ...]) -> None:
        self.engine = engine
        self.store = store
        self.redact_keys = redact_keys

    async def deploy(self, command: Command, incoming: Incoming, design: dict[str, Any],
                     source: Source) -> Deployed:
        """Deploy (or dry-run) a design already read and parsed (its options and flags
        in ``command``)."""
        if cluster_mod.is_cluster(design):
            return await self._deploy_cluster(command, incoming, design, source)
        plan = self.engine.plan(design, command.options.get("pipeline"),
                                force="force" in command.flags)
        steps = [s.name for s in plan.pipeline.steps]
        if "dry-run" in command.flags:
            return Deployed([(f"{plan.hostname}: dry run of pipeline {plan.pipeline.name}, "
                              f"would run {len(steps)} steps: {', '.join(steps)}"),
                             *report.clipboard_text(plan.clipboard,
                                                    self.redact_keys).splitlines()])
        if await self.store.latest_cluster(plan.hostname):
            raise JarvisError(f"{plan.hostname} is the name of a cluster; a host may not share it")
        deployment = await self.engine.deploy(plan, source, requester=incoming.identity,
                                              reply_to=incoming.route(),
                                              account=incoming.account)
        if deployment.state == State.AWAITING_APPROVAL:
            return Deployed([report.awaiting_line(deployment)], deployment.id)
        return Deployed([(f"{plan.hostname}: deployment #{deployment.id} started: pipeline "
                          f"{plan.pipeline.name}, {len(steps)} steps")], deployment.id)

    async def _deploy_cluster(self, command: Command, incoming: Incoming,
                              design: dict[str, Any], source: Source) -> Deployed:
        """Every host validated (names, pipelines, steps, waits) before any starts."""
        plan = self.engine.plan_cluster(design, command.options.get("pipeline"),
                                        force="force" in command.flags)
        groups: dict[tuple[str, str], list[str]] = {}
        for host in plan.hosts:
            groups.setdefault((host.role or "no role", host.plan.pipeline.name), []).append(
                host.hostname)
        shape = ", ".join(f"{len(names)} {role}" for (role, _), names in groups.items())
        if "dry-run" in command.flags:
            lines = [(f"{plan.name}: dry run of a cluster of {len(plan.hosts)} hosts ({shape}), "
                      "in this launch order:")]
            pipelines_by_name = {h.plan.pipeline.name: h.plan.pipeline for h in plan.hosts}
            for (role, pipeline), names in groups.items():
                steps = [s.name for s in pipelines_by_name[pipeline].steps]
                shown = ", ".join(names[:8]) + (f" +{len(names) - 8}" if len(names) > 8 else "")
                lines.append(f"{role} ({len(names)}: {shown}): pipeline {pipeline}, "
                             f"{len(steps)} steps: {', '.join(steps)}")
            return Deployed(lines)
        if await self.store.latest(plan.name):
            raise JarvisError(f"cluster {plan.name}: a host has that name; give the cluster "
                              "another one")
        cluster_id, deployments = await self.engine.deploy_cluster(
            plan, source, requester=incoming.identity, reply_to=incoming.route())
        ids = sorted(d.id for d in deployments)
        return Deployed([(f"{cluster_id}: cluster of {len(deployments)} hosts started ({shape}), "
                          f"deployments #{ids[0]}–#{ids[-1]}; status {cluster_id} for where it "
                          "is")], cluster_id=cluster_id)
