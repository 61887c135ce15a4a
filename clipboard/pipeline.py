"""Pipelines as configured: ordered ``module:task`` steps, each with an optional
timeout and undo, and whether a failure rolls back the completed steps.

A pipeline named ``<name>.<provider>`` (``deploy.ec2``) replaces ``<name>`` for
designs on that provider, so providers differ only where they must.

A step, and the syntax of its name (the built-in ``wait:host`` among them), live in
``clipboard.steps``: a deployment's record holds the same ``Step`` objects, and
``clipboard.records`` cannot import this module (this module imports it).
"""
from __future__ import annotations

from dataclasses import dataclass

from clipboard.config import Config
from clipboard.errors import ConfigError
from clipboard.records import State
from clipboard.steps import Step


@dataclass(frozen=True)
class Pipeline:
    """``ends_as`` is the state a complete run leaves the host in: ``ready``, or
    ``decommissioned`` for a pipeline that removes it (so status never calls a host
    that was taken down ready)."""

    name: str
    steps: tuple[Step, ...]
    rollback: bool
    ends_as: State = State.READY


ENDINGS = (State.READY, State.DECOMMISSIONED)


def pipelines(config: Config) -> dict[str, Pipeline]:
    out: dict[str, Pipeline] = {}
    for name, spec in config.section("pipelines").items():
        steps = tuple(Step.parse(raw, f"pipelines.{name}.steps[{i}]")
                      for i, raw in enumerate(spec.get("steps") or []))
        ends_as = str(spec.get("ends_as") or State.READY)
        if ends_as not in ENDINGS:
            raise ConfigError(f"pipelines.{name}.ends_as is {ends_as!r}; it is one of "
                              f"{', '.join(ENDINGS)}")
        out[name] = Pipeline(name, steps, bool(spec.get("rollback")), State(ends_as))
    return out


def choose(config: Config, name: str | None, provider: str | None) -> Pipeline:
    """The pipeline ``name`` (default from config), in its provider variant when one exists."""
    available = pipelines(config)
    name = name or config.runner.default_pipeline
    if provider and f"{name}.{provider}" in available:
        return available[f"{name}.{provider}"]
    if name not in available:
        known = ", ".join(sorted(available)) or "none"
        raise ConfigError(f"no pipeline named {name!r} (configured: {known})")
    return available[name]
