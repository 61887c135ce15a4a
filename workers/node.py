"""Provider-neutral node steps for the shipped pipelines: ``node:create``,
``node:poweroff``, ``node:destroy``.

One pipeline serves every provider: these steps hand the clipboard to the local
provider (``workers/local.py``) or to libcloud (``workers/cloud.py``) by the
design's ``provider`` (or, for poweroff/destroy, the provider of the node the
clipboard records). A design without a provider goes to ``providers.default``.
Either is a ``NodeProvider`` (workers/_provider.py): the local module as it is,
a cloud provider as ``cloud.Steps`` with its name fixed.

The local provider stands in for a cloud provider when jarvis runs on its
embedded default (no configuration file: "try it on one machine", so the seed's
``provider: Linode`` deploys without credentials), or when the provider is listed
in ``providers.local.stand_in_for``. The node records what it stands in for.
"""
from __future__ import annotations

import logging
from typing import Any

from clipboard import config
from clipboard.settings import ProvidersSettings
from clipboard.worker import task
from workers import cloud, local
from workers._provider import NodeProvider

log = logging.getLogger(__name__)

SETTINGS = (ProvidersSettings,)


def _design_provider(clipboard: dict[str, Any]) -> str:
    cfg = config.current()
    named = (clipboard.get("instance") or {}).get("provider") or cfg.providers.default
    provider = str(named).strip().lower()
    if provider == "local":
        return "local"
    provider = cloud.canonical(provider)
    if cfg.path is None or provider in cfg.providers.local.stand_in_for:
        return "local"
    return provider


def _steps(provider: str) -> NodeProvider:
    """The node steps of ``provider`` (``local`` or a canonical cloud provider name)."""
    return local if provider == "local" else cloud.Steps(provider)


def _recorded_provider(clipboard: dict[str, Any]) -> str:
    node = clipboard.get("node") or {}
    if node.get("provider") and node.get("state") != "destroyed":
        return str(node["provider"])
    return _design_provider(clipboard)


@task(undo="node:destroy", timeout=900, writes=("node", "ssh"))
def create(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Ensure the host's node exists and runs, on the design's provider; record node.ip."""
    provider = _design_provider(clipboard)
    named = (clipboard.get("instance") or {}).get("provider")
    if provider == "local":
        if named and named != "local":
            log.info("the local provider stands in for %s (embedded default or "
                     "providers.local.stand_in_for)", named)
        clipboard = local.deploy(clipboard)
        if named and named != "local":
            clipboard["node"]["stands_in_for"] = named
        return clipboard
    return _steps(provider).deploy(clipboard)


@task(timeout=600, writes=("node",))
def poweroff(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Power the host's node off (already off, or none, counts as done)."""
    return _steps(_recorded_provider(clipboard)).poweroff(clipboard)


@task(timeout=600, writes=("node",))
def destroy(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Destroy the host's node, by its recorded id or by hostname (gone counts as done)."""
    return _steps(_recorded_provider(clipboard)).destroy(clipboard)
