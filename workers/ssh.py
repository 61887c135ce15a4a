"""The ssh silo: reach a new node, learn and pin its host keys, then work on it as root.

Trust is established once, by ``ssh:hostkeys``: it is the first step that talks
SSH to a node (just after the provider created it), it records every host key
the node serves and the SSHFP records DNS will publish for them, and it binds
them to the node's id. From then on every connection — ``connect``/``run`` of
``workers._sshclient``, here and in the other silos — loads exactly those keys
with paramiko's ``RejectPolicy``: a node that shows any other key is refused,
never trusted. Nothing is executed on a node before its keys are pinned.

Only the steps live here; the client they share is ``workers._sshclient``.
Every network operation has a timeout; a step never hangs on a dead host.
"""
from __future__ import annotations

import hashlib
import logging
import re
import shlex
import socket
import time
from typing import Any

import paramiko

from clipboard.config import current
from clipboard.errors import StepFailed
from clipboard.settings import SshSettings
from clipboard.worker import task
from workers._sshclient import check, connect, fetch_host_key, target

log = logging.getLogger(__name__)

SETTINGS = (SshSettings,)

# One transport per family: a server shows one host key per connection, and the
# client's first acceptable type decides which. Ed25519 first, the pinning order.
KEY_FAMILIES: dict[str, list[str]] = {
    "ed25519": ["ssh-ed25519"],
    "ecdsa": ["ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"],
    "rsa": ["rsa-sha2-512", "rsa-sha2-256"],
}
SSHFP_ALGORITHMS = {"ssh-rsa": 1, "ssh-dss": 2, "ssh-ed25519": 4}
ECDSA_SSHFP = 3


def sshfp_algorithm(key_type: str) -> int:
    """The SSHFP algorithm number (RFC 4255, 6594, 7479) of an SSH key type."""
    if key_type.startswith("ecdsa-sha2-"):
        return ECDSA_SSHFP
    if key_type not in SSHFP_ALGORITHMS:
        raise StepFailed(f"no SSHFP algorithm number for host key type {key_type}")
    return SSHFP_ALGORITHMS[key_type]


def sshfp_records(key_type: str, blob: bytes) -> list[dict[str, Any]]:
    """SHA-1 and SHA-256 SSHFP records over a key's wire blob, as ``ssh-keygen -r`` prints."""
    algorithm = sshfp_algorithm(key_type)
    return [{"algorithm": algorithm, "fp_type": 1, "fingerprint": hashlib.sha1(blob).hexdigest()},
            {"algorithm": algorithm, "fp_type": 2,
             "fingerprint": hashlib.sha256(blob).hexdigest()}]


@task(timeout=600, writes=("ssh",))
def wait(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Wait until the node accepts TCP on its SSH port and sends an SSH banner."""
    host, port = target(clipboard)
    interval = current().ssh.wait_interval
    limit = current().ssh.wait_timeout
    deadline = time.monotonic() + limit
    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        try:
            banner = _banner(host, port, max(0.1, min(remaining, 5.0)))
        except OSError as exc:
            last = exc.strerror or str(exc) or type(exc).__name__
        else:
            if banner.startswith("SSH-"):
                log.info("%s:%d answers: %s", host, port, banner)
                clipboard.setdefault("ssh", {})["banner"] = banner
                return clipboard
            last = f"not an SSH banner: {banner[:60]!r}"
        if time.monotonic() + interval > deadline:
            raise StepFailed(f"SSH on {host}:{port} not up after {limit:g}s ({last})")
        time.sleep(interval)


def _banner(host: str, port: int, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        data = b""
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()


@task(writes=("ssh",))
def hostkeys(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Collect every host key the node serves, with SSHFP records, and pin them to the node."""
    host, port = target(clipboard)
    timeout = current().ssh.connect_timeout
    collected: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    for family, types in KEY_FAMILIES.items():
        try:
            key = fetch_host_key(host, port, types, timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise StepFailed(f"cannot fetch the {family} host key of {host}:{port}: {exc}") from None
        if key is None:
            log.info("%s:%d has no %s host key", host, port, family)
            continue
        collected[key.get_name()] = key.get_base64()
        records.extend(sshfp_records(key.get_name(), key.asbytes()))
        log.info("host key %s SHA256:%s", key.get_name(), key.fingerprint.partition(":")[2])
    if not collected:
        raise StepFailed(f"{host}:{port} showed no rsa, ecdsa or ed25519 host key")
    ssh = clipboard.setdefault("ssh", {})
    node_id = str((clipboard.get("node") or {}).get("id") or "")
    if ssh.get("host_keys") and ssh.get("host_keys_node") == node_id \
            and ssh["host_keys"] != collected:
        raise StepFailed(f"node {node_id} now shows host keys other than the pinned ones: "
                         "refused (destroy and deploy the node to start over)")
    ssh.update(host_keys=collected, host_keys_node=node_id, sshfp=records)
    return clipboard


@task(writes=("ssh",))
def keygen(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Give root on the node an ed25519 key pair (an existing one is kept); record its public key."""
    instance = clipboard.get("instance") or {}
    comment = f"root@{instance.get('fqdn') or instance.get('hostname') or 'host'}"
    timeout = current().ssh.command_timeout
    command = ("umask 077 && mkdir -p /root/.ssh && "
               "{ test -s /root/.ssh/id_ed25519 || "
               f"ssh-keygen -q -t ed25519 -N '' -C {shlex.quote(comment)} -f /root/.ssh/id_ed25519; }} && "
               "{ test -s /root/.ssh/id_ed25519.pub || ssh-keygen -y -f /root/.ssh/id_ed25519 "
               "> /root/.ssh/id_ed25519.pub; } && cat /root/.ssh/id_ed25519.pub")
    with connect(clipboard, timeout=current().ssh.connect_timeout) as client:
        public = check(clipboard, client, command, timeout).strip()
    if not public.startswith("ssh-ed25519 "):
        raise StepFailed("the node printed no ed25519 public key for root", clipboard=clipboard)
    clipboard.setdefault("ssh", {})["root_public_key"] = public
    return clipboard


def _commands(clipboard: dict[str, Any]) -> list[str]:
    instance = clipboard.get("instance") or {}
    found: list[str] = []
    for where, value in (("instance.commands", instance.get("commands")),
                         ("ssh.commands", list(current().ssh.commands))):
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise StepFailed(f"{where} must be a list of command strings")
        found.extend(value)
    return found


@task(writes=())
def run(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Run the design's commands (instance.commands, then ssh.commands) on the node, in order.

    Each exit status is checked; the first failure fails the step.
    """
    commands = _commands(clipboard)
    if not commands:
        log.info("no commands in instance.commands or ssh.commands")
        return None
    timeout = current().ssh.command_timeout
    with connect(clipboard, timeout=current().ssh.connect_timeout) as client:
        for number, command in enumerate(commands, 1):
            log.info("command %d/%d: %s", number, len(commands), command[:200])
            check(clipboard, client, command, timeout)
    return None


FSTAB_EOF = "JARVIS_FSTAB_EOF"


@task(writes=())
def mounts(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Ensure the design's mounts are the node's /etc/fstab entries for their mountpoints, then mount.

    An fstab line for the same mountpoint that differs is replaced; other lines
    are kept. The file is rewritten only when it changes, and ``mount -a``
    mounts what is not mounted yet, so a second run changes nothing.
    """
    wanted = (clipboard.get("instance") or {}).get("mounts") or []
    if not isinstance(wanted, list):
        raise StepFailed("instance.mounts must be a list of {device, mountpoint, fstype, options}")
    if not wanted:
        log.info("no mounts in the design")
        return None
    entries = [_fstab_line(entry, n) for n, entry in enumerate(wanted, 1)]
    timeout = current().ssh.command_timeout
    with connect(clipboard, timeout=current().ssh.connect_timeout) as client:
        current_text = check(clipboard, client, "touch /etc/fstab && cat /etc/fstab", timeout)
        text = merge_fstab(current_text, entries)
        script = [f"mkdir -p {' '.join(shlex.quote(mp) for mp, _ in entries)}"]
        if text != current_text:
            log.info("updating /etc/fstab")
            script.append(f"cat > /etc/fstab.jarvis <<'{FSTAB_EOF}'\n{text}{FSTAB_EOF}\n"
                          "mv /etc/fstab.jarvis /etc/fstab")
        script.append("mount -a")
        check(clipboard, client, "set -e\n" + "\n".join(script), timeout)
    return None


KERNEL_RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")


@task(writes=("ssh",))
def kernel(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Record the node's kernel; install the one the design asks for (instance.kernel) and boot it next.

    Step 9 of the re-deployment list. How to install a kernel and choose the boot
    entry depends on the images, so both commands come from the configuration
    (``ssh.kernel_install``, ``ssh.kernel_boot``, ``{kernel}`` standing for the
    release, quoted); a design that asks for a kernel the node is not running
    fails the step while they are not configured, rather than guess on a real
    host. The node is not rebooted: ``ssh.kernel.reboot_needed`` says it should be.
    """
    wanted = (clipboard.get("instance") or {}).get("kernel")
    if wanted is not None and (not isinstance(wanted, str) or not KERNEL_RELEASE.match(wanted)):
        raise StepFailed("instance.kernel must be a kernel release as uname -r prints it "
                         "(e.g. 6.1.0-18-amd64)")
    timeout = current().ssh.command_timeout
    with connect(clipboard, timeout=current().ssh.connect_timeout) as client:
        running = check(clipboard, client, "uname -r", timeout).strip()
        record = {"running": running, "boot": running, "reboot_needed": False}
        clipboard.setdefault("ssh", {})["kernel"] = record
        if wanted is None or wanted == running:
            log.info("running kernel %s%s", running, "" if wanted is None else ", as the design asks")
            return clipboard
        install, boot = current().ssh.kernel_install, current().ssh.kernel_boot
        if not install:
            raise StepFailed(f"instance.kernel asks for {wanted} and the node runs {running}, but "
                             "ssh.kernel_install is not configured", clipboard=clipboard)
        for what, template in (("installing", install), ("choosing the boot kernel", boot)):
            if template:
                log.info("%s %s", what, wanted)
                check(clipboard, client, str(template).replace("{kernel}", shlex.quote(wanted)),
                       timeout)
        record.update(boot=wanted, reboot_needed=True)
    return clipboard


def merge_fstab(text: str, entries: list[tuple[str, str]]) -> str:
    """``text`` with each entry's line replacing any line for the same mountpoint."""
    mountpoints = {mp: line for mp, line in entries}
    kept: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) > 1 \
                and fields[1] in mountpoints:
            continue
        kept.append(line)
    kept.extend(line for _, line in entries)
    return "\n".join(kept) + "\n"


def _fstab_line(entry: Any, number: int) -> tuple[str, str]:
    if not isinstance(entry, dict):
        raise StepFailed(f"instance.mounts entry {number} is not a mapping")
    fields = {}
    for key, default in (("device", None), ("mountpoint", None), ("fstype", "auto"),
                         ("options", "defaults")):
        value = entry.get(key, default)
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise StepFailed(f"instance.mounts entry {number}: {key} must be a non-empty word")
        fields[key] = value
    if not fields["mountpoint"].startswith("/"):
        raise StepFailed(f"instance.mounts entry {number}: mountpoint must be an absolute path")
    return fields["mountpoint"], (f"{fields['device']} {fields['mountpoint']} {fields['fstype']} "
                                  f"{fields['options']} 0 0")
