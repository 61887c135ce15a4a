"""The local node's sshd: started in its own mount, UTS and PID namespaces, stopped by pid.

The start script pivots into the node's tree and unmounts the machine's
filesystem from the namespace; capabilities that act on shared kernel state are
dropped from the bounding set. Pids are checked against ``/proc`` before any
signal, so a reused pid is never killed.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from clipboard import config
from clipboard.errors import StepFailed
from workers._localstate import in_use, ssh_port, write_node

# Capabilities whose effects reach beyond the node's namespaces.
DROPPED_CAPS = ["net_admin", "net_raw", "mknod", "sys_module", "sys_rawio", "sys_time",
                "sys_boot", "syslog", "mac_admin", "mac_override", "audit_control",
                "sys_pacct", "wake_alarm", "block_suspend", "sys_tty_config", "bpf", "perfmon"]
DEVICES = ["null c 1 3", "zero c 1 5", "full c 1 7", "random c 1 8", "urandom c 1 9",
           "tty c 5 0"]


# Runs in the new namespaces as their PID 1, with the machine's tools, then
# pivots into the tree and execs the tree's sshd (which becomes PID 1).
START_SCRIPT = r"""
set -e
root="$1"; host="$2"; caps="$3"
mount --bind "$root" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
for p in sys sysrq-trigger; do
  [ -e "$root/proc/$p" ] || continue
  mount --bind "$root/proc/$p" "$root/proc/$p"
  mount -o remount,bind,ro "$root/proc/$p"
done
mount -t tmpfs -o mode=0755,nosuid,nodev,size=16m run "$root/run"
mkdir -m 0755 "$root/run/sshd"
mount -t tmpfs -o mode=0755,nosuid,size=1m dev "$root/dev"
for spec in {devices}; do
  set -- $spec
  mknod -m 0666 "$root/dev/$1" "$2" "$3" "$4"
done
mkdir -m 0755 "$root/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
hostname "$host"
cd "$root"
pivot_root . .oldroot
exec /bin/sh -c 'umount -l /.oldroot && exec /usr/bin/setpriv --bounding-set "$0" -- /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config' "$caps"
""".format(devices=" ".join(f"'{d}'" for d in DEVICES))


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _ours(node: dict[str, Any], tree: Path) -> bool:
    """Whether node.json's launcher pid is still this node's ``unshare`` (not a reused pid)."""
    pid = node.get("pid")
    if not isinstance(pid, int) or not alive(pid):
        return False
    argv = _cmdline(pid)
    return bool(argv) and Path(argv[0]).name == "unshare" and str(tree) in argv


def is_running(node: dict[str, Any] | None, tree: Path) -> bool:
    return node is not None and _ours(node, tree) and in_use(str(node["ip"]))


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def start(host_dir: Path, node: dict[str, Any], hostname: str) -> None:
    """Start the node's sshd in its namespaces; return when it sends its SSH banner.

    sshd gets its own session and a log file, never the worker's pipes: the
    runner kills the worker's process group when the step ends and waits for
    EOF on stdout, and the node must outlive the step.
    """
    tree = host_dir / "tree"
    caps = ",".join(f"-{cap}" for cap in DROPPED_CAPS)
    script = host_dir / "start.sh"
    script.write_text(START_SCRIPT)
    argv = ["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child=SIGTERM",
            "--propagation", "private", "--", "/bin/sh", str(script), str(tree), hostname, caps]
    with open(host_dir / "sshd.log", "ab") as logfile:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                                start_new_session=True, close_fds=True, cwd="/")
    node.update(pid=proc.pid, sshd_pid=None)
    write_node(host_dir, node)
    limit = config.current().providers.local.start_timeout
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StepFailed(f"the local node's sshd exited with {proc.returncode}: {_tail(host_dir)}")
        if _banner_ok(str(node["ip"])):
            children = _children(proc.pid)
            node["sshd_pid"] = children[0] if children else None
            write_node(host_dir, node)
            return
        time.sleep(0.02)
    stop(host_dir, node)
    raise StepFailed(f"the local node's sshd did not answer within {limit:g}s: {_tail(host_dir)}")


def _banner_ok(ip: str) -> bool:
    try:
        with socket.create_connection((ip, ssh_port()), timeout=0.5) as sock:
            sock.settimeout(0.5)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _tail(host_dir: Path, lines: int = 5) -> str:
    try:
        text = (host_dir / "sshd.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def stop(host_dir: Path, node: dict[str, Any], grace: float = 5.0) -> None:
    """Stop the node's sshd (its namespace ends with it, mounts and sessions included)."""
    tree = host_dir / "tree"
    if not _ours(node, tree):
        return
    launcher = int(node["pid"])
    sshd = node.get("sshd_pid")
    target = sshd if isinstance(sshd, int) and sshd in _children(launcher) else launcher
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not alive(launcher):
                return
            time.sleep(0.02)
        target = launcher
    raise StepFailed(f"the local node's sshd (pid {launcher}) did not stop")
