"""The local provider: a real SSH host on this machine, for trying jarvis with nothing else.

A node is an OpenSSH ``sshd`` on its own loopback address (127.0.x.y, port
``providers.local.port``, 2222 by default: a machine's own sshd on 0.0.0.0:22 takes 22
on every loopback address)
running in its own mount, UTS and PID namespaces over its own root directory:
a small tree under the state directory with a static busybox, sshd, ssh-keygen
and their libraries. The tree becomes the node's ``/`` by ``pivot_root`` and the
machine's own filesystem is unmounted from the namespace, so a step run on the
node (write /etc/fstab, ``mount -a``, ``hostname``) cannot reach the machine
jarvis runs on: its files, mounts, hostname and processes are out of sight.
Capabilities that act on shared kernel state (network configuration, raw
sockets, device nodes, modules, clock, reboot) are dropped from the bounding
set. It is isolation against mistakes, not a sandbox for hostile code: root on
the node keeps CAP_SYS_ADMIN (mounts are its business) and shares the kernel.

Each node has a directory ``<state_dir>/<hostname>`` holding ``node.json``
(id, address, pids), the tree and sshd's log, so that ``local:poweroff`` and
``local:destroy`` work from a fresh process, after jarvis restarted.

Which node a step acts on is decided here, not by the clipboard: always the
state directory of the instance's hostname, whose ``node.json`` must name that
host; when the clipboard records a local node (this deployment's create did),
its id must be the one on disk. A ``node.name`` in the clipboard never picks
another host's directory.

The parts: ``workers._localstate`` (node records, addresses), ``workers._localroot``
(the tree) and ``workers._localsshd`` (the namespaced sshd); the tasks live here.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from clipboard import config
from clipboard.errors import StepFailed
from clipboard.settings import ProvidersSettings
from clipboard.validate import check_hostname
from clipboard.worker import task
from workers._localroot import (
    REQUIRED_BINARIES,
    authorize,
    build_tree,
    busybox_path,
    write_address,
    write_shadow,
)
from workers._localsshd import is_running, start, stop
from workers._localstate import (
    NODE_FILE,
    allocate,
    base_dir,
    flock,
    host_dir_of,
    in_use,
    machine_lock,
    read_node,
    ssh_port,
    write_node,
)

log = logging.getLogger(__name__)

SETTINGS = (ProvidersSettings,)

HOST_TOOLS = ["unshare", "pivot_root", "mount", "mknod", "hostname", "ssh-keygen"]


def check_prerequisites() -> None:
    """StepFailed naming everything missing for a local node, in one message."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root privileges (the local provider creates namespaces and pivots roots)")
    missing += [f"the {tool} command" for tool in HOST_TOOLS if shutil.which(tool) is None]
    extra = config.current().providers.local.binaries
    missing += [f"{path}" for path in [*REQUIRED_BINARIES, *extra] if not os.access(path, os.X_OK)]
    if not busybox_path().is_file():
        missing.append(f"a static busybox at {busybox_path()} (Debian package busybox-static)")
    if missing:
        raise StepFailed("the local provider cannot run here; missing: " + "; ".join(missing)
                         + " (packages: util-linux openssh-server busybox-static)")


def _node_entry(node: dict[str, Any], state: str) -> dict[str, Any]:
    return {"provider": "local", "id": node["id"], "name": node["name"], "state": state,
            "ip": node["ip"], "ipv6": None, "ssh_host": node["ip"], "ssh_port": ssh_port()}


@task(undo="local:destroy", timeout=120, writes=("node", "ssh"))
def deploy(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Ensure the host runs as a local node: allocate its address, build its tree, start sshd."""
    check_prerequisites()
    instance = clipboard["instance"]
    hostname = check_hostname(instance.get("hostname"))
    provider = instance.get("provider")
    if provider and provider != "local":
        log.info("the design names provider %s; the local provider deploys it on this machine",
                 provider)
    base = base_dir()
    host_dir = base / hostname
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    with flock(machine_lock()):
        node = _owned(host_dir, hostname, read_node(host_dir))
        if node is None:
            host_dir.mkdir(mode=0o700, exist_ok=True)
            node = {"id": f"local-{hostname}-{uuid.uuid4().hex[:12]}", "name": hostname,
                    "ip": allocate(base, hostname), "port": ssh_port(), "pid": None,
                    "created": time.time()}
            write_node(host_dir, node)
    tree = host_dir / "tree"
    if not (tree / "etc" / "ssh" / "ssh_host_rsa_key").exists():
        if tree.exists():
            shutil.rmtree(tree)
        log.info("building node %s (fresh host keys)", hostname)
        build_tree(tree, instance)
        (clipboard.get("ssh") or {}).pop("host_keys", None)
    authorize(tree, clipboard)
    write_shadow(tree, instance)
    with flock(machine_lock()):
        if is_running(node, tree):
            log.info("node %s already runs on %s:%d; kept", hostname, node["ip"], ssh_port())
        else:
            if in_use(str(node["ip"])):
                taken = node["ip"]
                node["ip"] = allocate(base, hostname)
                log.warning("%s:%d is taken by another process; node %s moves to %s",
                            taken, ssh_port(), hostname, node["ip"])
            write_address(tree, instance, str(node["ip"]))
            start(host_dir, node, hostname)
            log.info("node %s runs on %s:%d (sshd pid %s)", hostname, node["ip"], ssh_port(),
                     node.get("sshd_pid"))
    clipboard["node"] = _node_entry(node, "running")
    return clipboard


def _owned(host_dir: Path, hostname: str, node: dict[str, Any] | None) -> dict[str, Any] | None:
    """``node`` (read from ``host_dir``) when it is ``hostname``'s; StepFailed otherwise."""
    if node is not None and node.get("name") != hostname:
        raise StepFailed(f"{host_dir / NODE_FILE} records the node {str(node.get('name'))[:64]!r}, "
                         f"not {hostname}: not touched")
    return node


def _existing(clipboard: dict[str, Any]) -> tuple[Path, dict[str, Any] | None]:
    """This host's node: its own state directory, checked against any node the clipboard records."""
    hostname = check_hostname((clipboard.get("instance") or {}).get("hostname"))
    host_dir = host_dir_of(hostname)
    node = _owned(host_dir, hostname, read_node(host_dir))
    recorded = clipboard.get("node") or {}
    if node is not None and recorded.get("provider") == "local" and recorded.get("id") \
            and recorded["id"] != node.get("id"):
        raise StepFailed(f"the clipboard's node {str(recorded['id'])[:80]!r} is not {hostname}'s "
                         f"local node {node.get('id')}: not touched")
    return host_dir, node


@task(writes=("node",))
def poweroff(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Stop the node's sshd, keeping its tree and host keys (deploy starts it again)."""
    host_dir, node = _existing(clipboard)
    if node is None:
        log.info("no local node at %s; nothing to power off", host_dir)
        return clipboard
    stop(host_dir, node)
    node["pid"] = node["sshd_pid"] = None
    write_node(host_dir, node)
    log.info("node %s powered off", node["name"])
    clipboard["node"] = _node_entry(node, "stopped")
    return clipboard


@task(writes=("node",))
def destroy(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Stop the node's sshd and remove its tree, keys and address."""
    host_dir, node = _existing(clipboard)
    if node is None:
        log.info("no local node at %s; nothing to destroy", host_dir)
        return clipboard
    stop(host_dir, node)
    shutil.rmtree(host_dir)
    log.info("node %s destroyed (%s released)", node["name"], node.get("ip"))
    clipboard["node"] = _node_entry(node, "destroyed")
    return clipboard
