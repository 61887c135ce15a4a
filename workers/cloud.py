"""Cloud nodes through apache-libcloud: EC2, Linode (API v4) and vSphere.

The design names the provider (``instance.provider``, case-insensitive; ``aws``
means ec2, ``vmware`` means vsphere) and, by name, the size (``instance.size``,
or ``instance.grade`` mapped per provider by the ``grades`` config), the image
(``instance.guestid``) and the location (``instance.datacenter``). Credentials
and endpoints come from ``providers.<provider>`` in the config, secrets inline or
from the environment variable the config names.

Every step is "ensure" style, because a pipeline may be retried after a crash:

* ``cloud:create`` reuses the node already recorded in ``node.id``; on EC2 it
  sends a client token derived from the deployment (hostname, deploy key and a
  generation bumped by ``destroy``) so AWS itself refuses to start a second
  instance for a retried request, and it also tags the instance with that token
  and looks for the tag first (moto, the test server, ignores client tokens).
  Linode and vSphere labels are unique, so there a node with the host's name is
  the one to reuse.
* ``cloud:destroy`` and ``cloud:poweroff`` treat "already gone" as done.

Whatever the clipboard says, a step acts only on a node that is this host's at
the provider (``owner_problem``): named after the host and, on EC2, tagged
``jarvis-host=<hostname>`` at create; on Linode tagged ``jarvis``. A ``node.id``
naming someone else's instance is refused, never adopted, powered off or
destroyed, and so is a node that merely shares the host's name.

Every libcloud call passes its arguments by keyword (Linode's ``create_node``
changed its argument order between releases) and runs with a timeout; waits are
bounded by ``providers.<provider>.wait_timeout``.

This module holds the steps, the same for every provider; what differs per
provider is one class each (workers/_cloud_ec2.py, _cloud_linode.py,
_cloud_vsphere.py on the base in workers/_provider.py), and choosing size, image
and location by name is workers/_catalog.py. The underscore keeps those helper
modules from being taken for silos.

Addresses: ``node.ip`` / ``node.ipv6`` are what the cloud API reports (they go
into DNS); ``node.ssh_host`` / ``node.ssh_port`` are where jarvis connects, and
``providers.<provider>.ssh_host`` / ``ssh_port`` override them. The override
exists because a test cloud (moto) reports random addresses that belong to
nobody here (or to 127.x, which would hit this very machine): tests map the node
to their own sshd and must never connect to an address from the cloud API.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from libcloud.compute.types import NodeState

from clipboard import config
from clipboard.errors import StepFailed
from clipboard.settings import ProvidersSettings
from clipboard.worker import task
from workers import _catalog
from workers._cloud_ec2 import Ec2
from workers._cloud_linode import Linode
from workers._cloud_vsphere import VSphere
from workers._libcloud import api
from workers._node_keys import public_keys
from workers._provider import GONE, CloudProvider

log = logging.getLogger(__name__)

SETTINGS = (ProvidersSettings,)  # and the grades mapping (config.grades)

PROVIDERS: dict[str, CloudProvider] = {p.name: p for p in (Ec2(), Linode(), VSphere())}
ALIASES = {"aws": "ec2", "amazon": "ec2", "vmware": "vsphere"}


# ---- which provider ---------------------------------------------------------------------------

def canonical(name: Any) -> str:
    """The provider's canonical name (``Linode`` → linode, ``aws`` → ec2), or StepFailed."""
    if not isinstance(name, str) or not name.strip():
        raise StepFailed("instance.provider is not set (one of: ec2, linode, vsphere)")
    lowered = name.strip().lower()
    lowered = ALIASES.get(lowered, lowered)
    if lowered not in PROVIDERS:
        raise StepFailed(f"provider {name!r} is not a cloud provider "
                         f"(known: {', '.join(PROVIDERS)}; aliases: aws, vmware)")
    return lowered


def provider_of(clipboard: dict[str, Any], forced: str | None = None,
                design_first: bool = False) -> str:
    """The provider a step acts on: the recorded node's (it exists there), else the design's.

    ``design_first`` is for create: a redeploy may move the host to another
    provider than its old node's. ``forced`` is the provider of a seed-style alias
    (``linode:deploy``); a design that names another provider is refused rather
    than deployed somewhere else.
    """
    node = clipboard.get("node") or {}
    design = (clipboard.get("instance") or {}).get("provider")
    named = node.get("provider") if node.get("id") and not design_first else None
    named = named or design
    if forced is None:
        return canonical(named)
    if named is not None and canonical(named) != forced:
        raise StepFailed(f"the design's provider is {named!r}, but this step is for {forced}")
    return forced


# ---- the steps -------------------------------------------------------------------------------

def ensure_node(clipboard: dict[str, Any], forced: str | None = None) -> dict[str, Any]:
    """Ensure the design's node exists at its provider; record it in ``node``."""
    clipboard = copy.deepcopy(clipboard)
    provider = PROVIDERS[provider_of(clipboard, forced, design_first=True)]
    cfg = config.current()
    s = provider.settings(cfg)
    instance = clipboard["instance"]
    hostname = instance["hostname"]
    record = dict(clipboard.get("node") or {})
    driver = provider.make_driver(cfg)

    if record.get("id") and record.get("provider") == provider.name:
        node = provider.ours(provider.find_by_id(driver, str(record["id"])), hostname,
                             "the recorded")
        if node is not None and node.state not in GONE:
            log.info("%s node %s (%s) already exists; kept", provider.name, node.id, node.name)
            clipboard["node"] = provider.record(record, node)
            return clipboard
    existing = provider.earlier_try(driver, clipboard, record)
    if existing is not None:
        log.info("%s node %s (%s) was created by an earlier try; kept",
                 provider.name, existing.id, existing.name)
        clipboard["node"] = provider.record(record, existing)
        return clipboard

    # A fresh node: nothing of an old one's (other provider, or terminated) may linger.
    record = {k: record[k] for k in ("generation", "client_token") if k in record}
    size = provider.choose_size(driver, _catalog.wanted_size(instance, provider.name, cfg), s)
    image_name = instance.get("guestid")
    if image_name in (None, ""):
        raise StepFailed("instance.guestid (the image name) is not set")
    image = provider.choose_image(driver, str(image_name), s)
    location = provider.choose_location(driver, instance.get("datacenter"), s)
    keys = public_keys(clipboard)
    record.update({"provider": provider.name, "name": hostname, "state": "creating",
                   "size": str(size.id), "image": str(image.id),
                   "location": location.name if location is not None else None})
    clipboard["node"] = record
    try:
        node = provider.create_node(driver, clipboard, s, size, image, location, keys)
    except StepFailed as exc:
        raise StepFailed(str(exc), clipboard=clipboard) from None
    clipboard["node"] = provider.record(record, node)
    log.info("%s node %s (%s) created: size %s, image %s, location %s", provider.name, node.id,
             node.name, size.id, image.name, record["location"] or "default")
    if node.state in GONE:
        raise StepFailed(f"{provider.name} answered with the terminated node {node.id} "
                         "(a reused client token?): run cloud:destroy, then create again",
                         clipboard=clipboard)
    return clipboard


def wait_node(clipboard: dict[str, Any], forced: str | None = None) -> dict[str, Any]:
    """Wait (bounded) until the node runs with a public IPv4; record its addresses."""
    clipboard = copy.deepcopy(clipboard)
    record = dict(clipboard.get("node") or {})
    if not record.get("id"):
        raise StepFailed("no node.id in the clipboard: cloud:create has not run")
    provider = PROVIDERS[provider_of(clipboard, forced)]
    s = provider.settings()
    driver = provider.make_driver()
    timeout = s.wait_timeout
    interval = max(0.05, s.poll_interval)
    deadline = time.monotonic() + timeout
    hostname = clipboard["instance"]["hostname"]
    while True:
        node = provider.ours(provider.find_by_id(driver, str(record["id"])), hostname,
                             "the recorded")
        if node is None or node.state in GONE:
            record["state"] = "terminated" if node is not None else "missing"
            clipboard["node"] = record
            raise StepFailed(f"{provider.name} node {record['id']} is {record['state']}",
                             clipboard=clipboard)
        record = provider.record(record, node)
        if node.state == NodeState.RUNNING and record.get("ip"):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            clipboard["node"] = record
            raise StepFailed(f"{provider.name} node {node.id} is {node.state}, not running "
                             f"with a public IP, after {timeout:g}s", clipboard=clipboard)
        time.sleep(min(interval, left))
    record["ssh_host"] = s.ssh_host or str(record["ip"])
    record["ssh_port"] = s.ssh_port
    clipboard["node"] = record
    log.info("%s node %s running at %s (ssh %s:%s)", provider.name, node.id, record["ip"],
             record["ssh_host"], record["ssh_port"])
    return clipboard


def poweroff_node(clipboard: dict[str, Any], forced: str | None = None) -> dict[str, Any] | None:
    """Stop the node (by ``node.id``, else by the host's name); none or stopped = done."""
    clipboard = copy.deepcopy(clipboard)
    provider = PROVIDERS[provider_of(clipboard, forced)]
    driver = provider.make_driver()
    node = provider.resolve(driver, clipboard)
    if node is None or node.state in GONE:
        log.info("no live %s node for %s: nothing to power off", provider.name,
                 clipboard["instance"]["hostname"])
        return None
    if node.state == NodeState.STOPPED:
        log.info("%s node %s is already stopped", provider.name, node.id)
    else:
        api(provider.name, "stop_node", lambda: driver.stop_node(node=node))
        log.info("%s node %s powered off", provider.name, node.id)
    after = provider.find_by_id(driver, str(node.id)) or node
    clipboard["node"] = provider.record(dict(clipboard.get("node") or {}), after)
    return clipboard


def destroy_node(clipboard: dict[str, Any], forced: str | None = None) -> dict[str, Any] | None:
    """Destroy the node (by ``node.id``, else by the host's name for a redeploy); gone = done."""
    clipboard = copy.deepcopy(clipboard)
    provider = PROVIDERS[provider_of(clipboard, forced)]
    driver = provider.make_driver()
    node = provider.resolve(driver, clipboard)
    record = dict(clipboard.get("node") or {})
    if node is None or node.state in GONE:
        log.info("no live %s node for %s: nothing to destroy", provider.name,
                 clipboard["instance"]["hostname"])
        if not record.get("id"):
            return None
        record["state"] = "terminated"
    else:
        api(provider.name, "destroy_node", lambda: driver.destroy_node(node=node))
        log.info("%s node %s (%s) destroyed", provider.name, node.id, node.name)
        record = provider.record(record, node)
        record["state"] = "terminated"
    record.pop("client_token", None)  # that token belongs to the node just destroyed
    record["generation"] = int(record.get("generation") or 0) + 1
    record.pop("ssh_host", None)
    record.pop("ssh_port", None)
    clipboard["node"] = record
    return clipboard


@dataclass(frozen=True)
class Steps:
    """The node steps with the provider fixed: a ``NodeProvider`` (workers/_provider.py) for
    ``node:*`` and the seed's ``linode:deploy`` and friends. A design naming another
    provider is refused, not moved."""

    provider: str

    def deploy(self, clipboard: dict[str, Any]) -> dict[str, Any]:
        """create + wait_running."""
        return wait_node(ensure_node(clipboard, self.provider), self.provider)

    def poweroff(self, clipboard: dict[str, Any]) -> dict[str, Any] | None:
        return poweroff_node(clipboard, self.provider)

    def destroy(self, clipboard: dict[str, Any]) -> dict[str, Any] | None:
        return destroy_node(clipboard, self.provider)


def seed_style_tasks(alias: str, provider: str) -> None:
    """Register ``<alias>:deploy``, ``<alias>:poweroff`` and ``<alias>:destroy`` with the
    provider fixed, for pipelines written per provider in the seed's style
    (``linode:deploy``)."""
    steps = Steps(provider)

    def deploy_task(clipboard: dict[str, Any]) -> dict[str, Any]:
        return steps.deploy(clipboard)

    def poweroff_task(clipboard: dict[str, Any]) -> dict[str, Any] | None:
        return steps.poweroff(clipboard)

    def destroy_task(clipboard: dict[str, Any]) -> dict[str, Any] | None:
        return steps.destroy(clipboard)

    for func, step, doc, options in (
            (deploy_task, "deploy", (f"Create the {provider} node and wait until it runs "
                                     "(cloud:create + cloud:wait_running)."),
             {"undo": f"{alias}:destroy", "timeout": 900}),
            (poweroff_task, "poweroff",
             f"Power the {provider} node off (already off or gone = done).", {"timeout": 600}),
            (destroy_task, "destroy", (f"Destroy the {provider} node by node.id, or by hostname "
                                       "for a redeploy (gone = done)."), {"timeout": 600})):
        func.__doc__ = doc  # the catalog shows a task's first docstring line
        task(name=f"{alias}:{step}", writes=("node",), **options)(func)


# ---- the tasks -------------------------------------------------------------------------------
# Step timeouts sit above the internal bounds (API timeouts, wait_timeout) so a step
# fails with its own clear reason before the runner has to kill it.

@task(undo="cloud:destroy", timeout=600, writes=("node",))
def create(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Create the design's node at its provider (size, image, location by name); idempotent."""
    return ensure_node(clipboard)


@task(timeout=900, writes=("node",))
def wait_running(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Wait until the node runs; record node.ip, ipv6, ssh_host and ssh_port."""
    return wait_node(clipboard)


@task(timeout=600, writes=("node",))
def poweroff(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Power the node off (already off or gone = done)."""
    return poweroff_node(clipboard)


@task(timeout=600, writes=("node",))
def destroy(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Destroy the node by node.id, or by hostname for a redeploy (already gone = done)."""
    return destroy_node(clipboard)
