"""Linode in the seed's style (`linode:deploy`, `linode:destroy`, `linode:poweroff`).

Thin names for pipelines written per provider; the work is done by
workers/cloud.py, with the provider fixed to linode (a design naming another
provider is refused rather than deployed elsewhere).
"""
from __future__ import annotations

from typing import Any

from clipboard.worker import task
from workers import cloud

PROVIDER = "linode"


@task(undo="linode:destroy", timeout=900)
def deploy(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Create the Linode node and wait until it runs (cloud:create + cloud:wait_running)."""
    return cloud.deploy(clipboard, PROVIDER)


@task(timeout=600)
def poweroff(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Power the Linode node off (already off or gone = done)."""
    return cloud.poweroff_node(clipboard, PROVIDER)


@task(timeout=600)
def destroy(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Destroy the Linode node by node.id, or by hostname for a redeploy (gone = done)."""
    return cloud.destroy_node(clipboard, PROVIDER)
