"""Pipelines as configured: ordered ``module:task`` steps, each with an optional
timeout and undo, and whether a failure rolls back the completed steps.

A pipeline named ``<name>.<provider>`` (``deploy.ec2``) replaces ``<name>`` for
designs on that provider, so providers differ only where they must.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clipboard.config import Config
from clipboard.errors import ConfigError
from clipboard.runner import check_step_name


@dataclass(frozen=True)
class Step:
    name: str
    timeout: float | None = None
    undo: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "timeout": self.timeout, "undo": self.undo}

    @classmethod
    def parse(cls, raw: Any, where: str) -> "Step":
        if isinstance(raw, str):
            check_step_name(raw)
            return cls(raw)
        if isinstance(raw, dict) and isinstance(raw.get("step"), str):
            unknown = set(raw) - {"step", "timeout", "undo"}
            if unknown:
                raise ConfigError(f"{where}: unknown keys {sorted(unknown)} in a step")
            check_step_name(raw["step"])
            if raw.get("undo") is not None:
                check_step_name(raw["undo"])
            timeout = raw.get("timeout")
            if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
                raise ConfigError(f"{where}: timeout must be a positive number of seconds")
            return cls(raw["step"], timeout, raw.get("undo"))
        raise ConfigError(f"{where}: a step is 'module:task' or {{step: module:task, ...}}")


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[Step, ...]
    rollback: bool


def pipelines(config: Config) -> dict[str, Pipeline]:
    out: dict[str, Pipeline] = {}
    for name, spec in config.section("pipelines").items():
        steps = tuple(Step.parse(raw, f"pipelines.{name}.steps[{i}]")
                      for i, raw in enumerate(spec.get("steps") or []))
        out[name] = Pipeline(name, steps, bool(spec.get("rollback")))
    return out


def choose(config: Config, name: str | None, provider: str | None) -> Pipeline:
    """The pipeline ``name`` (default from config), in its provider variant when one exists."""
    available = pipelines(config)
    name = name or config.get("runner.default_pipeline")
    if provider and f"{name}.{provider}" in available:
        return available[f"{name}.{provider}"]
    if name not in available:
        known = ", ".join(sorted(available)) or "none"
        raise ConfigError(f"no pipeline named {name!r} (configured: {known})")
    return available[name]
