"""EC2 in the seed's style (`ec2:deploy`, `ec2:destroy`, `ec2:poweroff`).

Thin names for pipelines written per provider; the work is done by
workers/cloud.py, with the provider fixed to ec2 (a design naming another
provider is refused rather than deployed elsewhere).
"""
from __future__ import annotations

from typing import Any

from clipboard.worker import task
from workers import cloud

PROVIDER = "ec2"


@task(undo="ec2:destroy", timeout=900)
def deploy(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Create the EC2 node and wait until it runs (cloud:create + cloud:wait_running)."""
    return cloud.deploy(clipboard, PROVIDER)


@task(timeout=600)
def poweroff(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Power the EC2 node off (already off or gone = done)."""
    return cloud.poweroff_node(clipboard, PROVIDER)


@task(timeout=600)
def destroy(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Destroy the EC2 node by node.id, or by hostname for a redeploy (gone = done)."""
    return cloud.destroy_node(clipboard, PROVIDER)
