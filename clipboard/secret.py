"""The one way a secret is read from the configuration: inline or from the environment.

A secret may be written in the configuration file (``token: ...``) or, better, in an
environment variable named by the sibling key (``token_env: JARVIS_TOKEN``), so the
file can be shared. Every section that holds one (``clipboard.settings``), the chat
adapters' own settings and ``redact.configured_secrets`` go through this module, so
the rule (inline wins; a named but empty variable is an error naming it; the value
never appears in a message or a ``repr``) is written once, and the keys jarvis
scrubs are exactly the keys it resolves as secrets.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clipboard.errors import ConfigError

ENV_SUFFIX = "_env"


@dataclass(frozen=True)
class Secret:
    """A secret given inline (``<name>``) or through the environment variable
    ``<name>_env`` names; ``where`` is the dotted key, for messages. The value never
    appears in ``repr``."""

    where: str
    value: str | None
    env: str | None

    def __repr__(self) -> str:
        return f"Secret({self.where})"

    @property
    def configured(self) -> bool:
        """Whether the configuration gives the secret either way."""
        return bool(self.value) or bool(self.env)

    def get(self) -> str | None:
        """The secret; None when neither form is set; an error when the named
        environment variable is empty."""
        if self.value:
            return self.value
        if not self.env:
            return None
        found = os.environ.get(self.env, "")
        if not found.strip():
            raise ConfigError(f"{self.where} is not set and {self.where}{ENV_SUFFIX} names the "
                              f"environment variable {self.env}, which is empty")
        return found

    def require(self) -> str:
        """The secret, or an error naming both ways to set it."""
        found = self.get()
        if found is None:
            raise ConfigError(f"{self.where} is not set (set it, or name an environment "
                              f"variable in {self.where}{ENV_SUFFIX})")
        return found


def secret_pairs(data: Mapping[str, Any], where: str = "") -> list[tuple[str, Any, Any]]:
    """Every ``(dotted key, inline value, env name)`` where a mapping holds a key and its
    ``_env`` sibling: what a secret looks like in a configuration."""
    found: list[tuple[str, Any, Any]] = []
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if isinstance(value, Mapping):
            found.extend(secret_pairs(value, path))
        elif str(key).endswith(ENV_SUFFIX):
            base = str(key)[:-len(ENV_SUFFIX)]
            found.append((path[:-len(ENV_SUFFIX)], data.get(base), value))
    return found
