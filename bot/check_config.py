"""``jarvis check-config FILE``: every problem of a configuration, one line each.

``clipboard.config.load`` stops the bot at the first bad file; this goes further
so that one run names everything to fix: the schema (unknown keys, types,
ranges), then the pipelines — each step must be a task some worker provides,
found the way the runner finds it (``Runner.resolve`` over the worker catalog and
the configured worker directories), so a typo in a step fails here and not in
the middle of someone's deployment; every ``acl`` rule must name a command. Then
every typed section (``clipboard.settings``) is built, so what only a section's type
says (a ``monitoring.silence_id_format`` that is no format) is named too, with the
worker modules that declare they read it (their ``SETTINGS``, carried in the catalog).
The pipelines are read from the raw mapping: the file may be wrong in any way.
Warnings (ACL grants anyone could claim) do not fail the check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bot.acl import rule_problems, spoofable_grants
from clipboard import celery_app
from clipboard import config as config_mod
from clipboard import pipeline as pipeline_mod
from clipboard.errors import ConfigError, JarvisError, UnknownStep
from clipboard.records import State
from clipboard.runner import Runner
from clipboard.steps import Step


@dataclass
class Findings:
    """Problems make the file unusable (exit status 2); warnings are advice."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


async def check(path: str | Path) -> Findings:
    """What is wrong with the configuration file at ``path`` (nothing: it is usable)."""
    found = Findings()
    try:
        user = config_mod.read_file(path)
    except JarvisError as exc:
        found.problems.append(str(exc))
        return found
    found.problems.extend(config_mod.validate(user))
    if not isinstance(user, dict):
        return found
    found.problems.extend(rule_problems(user.get("acl")))
    config = config_mod.Config(config_mod.merge(config_mod.defaults(), user))
    # The typed sections are built only from a file the schema accepts: otherwise each
    # wrong type would be named twice.
    unbuilt = {} if found.problems else config.problems()
    steps = _pipeline_steps(config, found.problems)
    found.problems.extend(_worker_dir_problems(config))
    unresolved, readers = await _unresolved(config, steps)
    found.problems.extend(celery_app.problems(config))
    found.problems.extend(_section_lines(unbuilt, readers))
    found.problems.extend(unresolved)
    found.warnings.extend(spoofable_grants(config.section("acl")))
    return found


def _section_lines(unbuilt: dict[str, str], readers: dict[str, list[str]]) -> list[str]:
    """One line per typed section that cannot be built, naming the worker modules that
    declare they read it (their ``SETTINGS``)."""
    by_section: dict[str, list[str]] = {}
    for module, sections in readers.items():
        for name in sections:
            by_section.setdefault(name, []).append(module)
    lines = []
    for name, problem in unbuilt.items():
        modules = sorted(by_section.get(name, []))
        read = f" (read by the worker module{'s' if len(modules) > 1 else ''} " \
            f"{', '.join(modules)})" if modules else ""
        lines.append(problem + read)
    return lines


def _pipeline_steps(config: config_mod.Config, problems: list[str]) -> list[tuple[str, str]]:
    """Every step and undo a pipeline names, as ``(where, step)``; what cannot even be
    parsed goes to ``problems``."""
    steps: list[tuple[str, str]] = []
    pipelines = {name: spec for name, spec in config.section("pipelines").items()
                 if isinstance(spec, dict)}
    for name, spec in pipelines.items():
        ends_as = spec.get("ends_as") or State.READY
        if isinstance(ends_as, str) and ends_as not in pipeline_mod.ENDINGS:
            problems.append(f"pipelines.{name}.ends_as is {ends_as!r}; it is one of "
                            f"{', '.join(pipeline_mod.ENDINGS)}")
        raw_steps = spec.get("steps") or []
        if not isinstance(raw_steps, list):
            continue  # the schema said so already
        for i, raw in enumerate(raw_steps):
            where = f"pipelines.{name}.steps[{i}]"
            try:
                step = Step.parse(raw, where)
            except JarvisError as exc:
                problems.append(_at(where, str(exc)))
                continue
            if step.wait is None:
                steps.append((where, step.name))
            if step.undo:
                steps.append((f"{where}.undo", step.undo))
    default = config.get("runner.default_pipeline")
    if default and default not in pipelines:
        problems.append(f"runner.default_pipeline {default!r} is not a configured pipeline "
                        f"(configured: {', '.join(sorted(pipelines)) or 'none'})")
    return steps


def _worker_dir_problems(config: config_mod.Config) -> list[str]:
    dirs = config.get("runner.worker_dirs") or []
    if not isinstance(dirs, list):
        return []  # the schema said so already
    return [f"runner.worker_dirs[{i}] {d} is not a directory"
            for i, d in enumerate(dirs) if isinstance(d, str) and not Path(d).expanduser().is_dir()]


async def _unresolved(config: config_mod.Config,
                      steps: list[tuple[str, str]]) -> tuple[list[str], dict[str, list[str]]]:
    """One line per step no worker provides, naming the pipeline and the step; and which
    sections each worker module reads (from the workers' catalog)."""
    try:
        runner = Runner(config)
    except ConfigError:
        return [("the pipelines' steps were not looked up: fix the runner and clipboard "
                 "sections first")], {}
    try:
        await runner.start()
        problems = []
        for where, step in steps:
            try:
                runner.resolve(step)
            except UnknownStep as exc:
                problems.append(_at(where, _missing_task(step, runner) or str(exc)))
        return problems, dict(runner.catalog.get("settings") or {})
    finally:
        await runner.close()


def _missing_task(step: str, runner: Runner) -> str | None:
    """A clearer line when the module exists but has no such task (a typo)."""
    module, _, task = step.partition(":")
    offered = sorted(name.partition(":")[2] for name in runner.tasks
                     if name.partition(":")[0] == module)
    if not offered:
        return None
    return f"worker module {module!r} has no task {task!r} (it has: {', '.join(offered)})"


def _at(where: str, message: str) -> str:
    return message if message.startswith(where) else f"{where}: {message}"


def report_lines(path: str, found: Findings) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr lines) for the CLI: one per problem or warning."""
    err = [problem if path in problem else f"{path}: {problem}" for problem in found.problems]
    err += [f"{path}: warning: {warning}" for warning in found.warnings]
    if found.problems:
        return [], err
    noted = f" ({len(found.warnings)} warning{'s' if len(found.warnings) != 1 else ''})" \
        if found.warnings else ""
    return [f"{path}: ok{noted}"], err


def exit_status(found: Findings) -> int:
    return 2 if found.problems else 0

