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
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from clipboard import config
from clipboard.errors import StepFailed
from clipboard.validate import check_hostname
from clipboard.worker import task

log = logging.getLogger(__name__)

NODE_FILE = "node.json"
HOST_KEYS = {"ed25519": ["-t", "ed25519"], "ecdsa": ["-t", "ecdsa", "-b", "256"],
             "rsa": ["-t", "rsa", "-b", "3072"]}
# Capabilities whose effects reach beyond the node's namespaces.
DROPPED_CAPS = ["net_admin", "net_raw", "mknod", "sys_module", "sys_rawio", "sys_time",
                "sys_boot", "syslog", "mac_admin", "mac_override", "audit_control",
                "sys_pacct", "wake_alarm", "block_suspend", "sys_tty_config", "bpf", "perfmon"]
HOST_TOOLS = ["unshare", "pivot_root", "mount", "mknod", "hostname", "ssh-keygen"]
REQUIRED_BINARIES = ["/usr/sbin/sshd", "/usr/bin/setpriv", "/usr/bin/ssh-keygen"]
TREE_DIRS = {"bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc/ssh": 0o755,
             "root": 0o700, "root/.ssh": 0o700, "proc": 0o555, "run": 0o755, "dev": 0o755,
             "tmp": 0o1777, "var/log": 0o755, "var/empty": 0o755, "home": 0o755, "mnt": 0o755,
             ".oldroot": 0o700}
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
for spec in %(devices)s; do
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
""" % {"devices": " ".join(f"'{d}'" for d in DEVICES)}

SSHD_CONFIG = """\
# Written by jarvis's local provider.
ListenAddress {ip}:{port}
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
HostKey /etc/ssh/ssh_host_rsa_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
PrintMotd no
PrintLastLog no
UseDNS no
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp internal-sftp
"""


# ---------------------------------------------------------------- state on disk

def base_dir() -> Path:
    """Where nodes live: ``providers.local.state_dir``, else ``<jarvis state>/local``."""
    configured = config.current().get("providers.local.state_dir")
    return Path(configured) if configured else config.state_dir() / "local"


def _host_dir(hostname: str) -> Path:
    return base_dir() / check_hostname(hostname)


def _read_node(host_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((host_dir / NODE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StepFailed(f"local node state {host_dir / NODE_FILE} is unreadable: {exc}") from None
    return data if isinstance(data, dict) else None


def _write_node(host_dir: Path, node: dict[str, Any]) -> None:
    tmp = host_dir / (NODE_FILE + ".tmp")
    tmp.write_text(json.dumps(node, indent=2, sort_keys=True) + "\n")
    tmp.replace(host_dir / NODE_FILE)


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _machine_lock() -> Path:
    """One lock for the whole machine: nodes of other state directories share 127/8 too."""
    run_lock = Path("/run/lock")
    return (run_lock if run_lock.is_dir() else Path(tempfile.gettempdir())) / "jarvis-local.lock"


# ---------------------------------------------------------------- addresses

def _candidates(hostname: str) -> Iterator[str]:
    """127.0.x.y addresses in an order fixed by the hostname (x, y in 1..254).

    127.0.0.0/24 is left alone: 127.0.0.1 is the machine's, and servers and tests
    commonly use its neighbours.
    """
    count = 254 * 254
    start = int.from_bytes(hashlib.sha256(hostname.encode()).digest()[:4], "big") % count
    for n in range(count):
        index = (start + n) % count
        yield f"127.0.{index // 254 + 1}.{index % 254 + 1}"


def ssh_port() -> int:
    """The port every local node's sshd listens on (each on its own address)."""
    return int(config.current().get("providers.local.port"))


def _in_use(ip: str) -> bool:
    """Whether something already listens on ip:port (another sshd, a stray process)."""
    try:
        with socket.create_connection((ip, ssh_port()), timeout=0.2):
            return True
    except OSError:
        return False


def allocate(base: Path, hostname: str) -> str:
    """A free address for ``hostname``: the first candidate that no other node under
    ``base`` has recorded and that nothing listens on (call under the machine lock)."""
    taken = set()
    for entry in base.iterdir() if base.is_dir() else []:
        node = _read_node(entry) if entry.is_dir() and entry.name != hostname else None
        if node and node.get("ip"):
            taken.add(str(node["ip"]))
    for ip in _candidates(hostname):
        address = ipaddress.ip_address(ip)
        if address in ipaddress.ip_network("127.0.0.0/8") and ip not in taken and not _in_use(ip):
            return ip
    raise StepFailed(f"no free 127.0.x.y address is left for a local node on port {ssh_port()} "
                     "(if this machine's own sshd listens on every address, set "
                     "providers.local.port to another port)")


# ---------------------------------------------------------------- prerequisites

def _busybox() -> Path:
    return Path(config.current().get("providers.local.busybox") or "/bin/busybox")


def check_prerequisites() -> None:
    """StepFailed naming everything missing for a local node, in one message."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root privileges (the local provider creates namespaces and pivots roots)")
    missing += [f"the {tool} command" for tool in HOST_TOOLS if shutil.which(tool) is None]
    extra = config.current().get("providers.local.binaries") or []
    missing += [f"{path}" for path in [*REQUIRED_BINARIES, *extra] if not os.access(path, os.X_OK)]
    if not _busybox().is_file():
        missing.append(f"a static busybox at {_busybox()} (Debian package busybox-static)")
    if missing:
        raise StepFailed("the local provider cannot run here; missing: " + "; ".join(missing)
                         + " (packages: util-linux openssh-server busybox-static)")


# ---------------------------------------------------------------- the node's tree

def _safe_open(tree: Path, relative: str, flags: int, mode: int = 0o644) -> int:
    """Open ``tree/relative`` without following any symlink the node may have planted.

    The tree belongs to the node's root, who could point /root/.ssh at a file of
    the machine's; jarvis runs as root here, so every write into the tree walks
    it one directory at a time with O_NOFOLLOW.
    """
    parts = [p for p in relative.split("/") if p]
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=fd)
    finally:
        os.close(fd)


def write_file(tree: Path, relative: str, text: str | bytes, mode: int = 0o644) -> None:
    data = text.encode() if isinstance(text, str) else text
    try:
        fd = _safe_open(tree, relative, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StepFailed(f"refusing to write {relative} in the node: a path component is "
                             "a symlink") from None
        raise
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        os.fchmod(handle.fileno(), mode)


def _libraries(binary: str) -> list[str]:
    """The shared objects ``ldd`` says ``binary`` loads (none for a static binary)."""
    result = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    paths = []
    for line in result.stdout.splitlines():
        for word in line.split():
            if word.startswith("/"):
                paths.append(word)
    return paths


def _copy_in(tree: Path, source: str) -> None:
    target = tree / source.lstrip("/")
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _install_binaries(tree: Path) -> None:
    """Copy sshd, setpriv, ssh-keygen (and configured extras) with their libraries."""
    extra = config.current().get("providers.local.binaries") or []
    for binary in dict.fromkeys([*REQUIRED_BINARIES, *extra]):
        _copy_in(tree, binary)
        for library in _libraries(binary):
            _copy_in(tree, library)
    busybox = tree / "bin" / "busybox"
    shutil.copy2(_busybox(), busybox)
    for library in _libraries(str(_busybox())):
        _copy_in(tree, library)
    applets = subprocess.run([str(_busybox()), "--list"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
    for applet in applets:
        link = tree / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")


def _shadow_hash(password: str | None) -> str:
    """A SHA-512 crypt hash of root's password (from core:randpass), or a locked '*'.

    The password goes to openssl on stdin, never on a command line.
    """
    if not password or shutil.which("openssl") is None:
        return "*"
    result = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                            capture_output=True, text=True, timeout=30)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.startswith("$6$") \
        else "*"


def write_shadow(tree: Path, instance: dict[str, Any]) -> None:
    """root's password on the node is the clipboard's (core:randpass); rewritten on every deploy."""
    write_file(tree, "etc/shadow", f"root:{_shadow_hash(instance.get('root_password'))}:19000:0:"
               "99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o600)


def write_address(tree: Path, instance: dict[str, Any], ip: str) -> None:
    """The files that name the node's address; rewritten before every start."""
    hostname = instance["hostname"]
    fqdn = instance.get("fqdn") or hostname
    names = f"{fqdn} {hostname}" if fqdn != hostname else hostname
    write_file(tree, "etc/hosts", f"127.0.0.1 localhost\n{ip} {names}\n")
    write_file(tree, "etc/ssh/sshd_config", SSHD_CONFIG.format(ip=ip, port=ssh_port()))


def _write_etc(tree: Path, instance: dict[str, Any]) -> None:
    hostname = instance["hostname"]
    write_file(tree, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
               "sshd:x:100:65534::/run/sshd:/bin/false\n"
               "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    write_file(tree, "etc/group", "root:x:0:\nnogroup:x:65534:\n")
    write_file(tree, "etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\n"
               "hosts: files\n")
    write_file(tree, "etc/hostname", hostname + "\n")
    write_file(tree, "etc/fstab", "# <device> <mountpoint> <type> <options> <dump> <pass>\n")
    write_file(tree, "etc/profile", "export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n")


def _start_host_keys(tree: Path, hostname: str) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """Start ssh-keygen for ed25519, ecdsa-256 and rsa-3072 host keys, all at once.

    RSA takes one to several seconds; the tree is filled in meanwhile.
    """
    jobs = []
    for name, args in HOST_KEYS.items():
        path = tree / "etc" / "ssh" / f"ssh_host_{name}_key"
        jobs.append((name, subprocess.Popen(
            ["ssh-keygen", "-q", *args, "-N", "", "-C", f"root@{hostname}", "-f", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    return jobs


def _finish_host_keys(jobs: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    failed = []
    for name, proc in jobs:
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"{name}: {err.decode(errors='replace').strip()[:200]}")
    if failed:
        raise StepFailed("ssh-keygen failed for host keys: " + "; ".join(failed))


def build_tree(tree: Path, instance: dict[str, Any]) -> None:
    """The node's root filesystem, with fresh host keys."""
    tree.mkdir(mode=0o755)
    os.chmod(tree, 0o755)
    for relative, mode in TREE_DIRS.items():
        (tree / relative).mkdir(parents=True, exist_ok=True)
        os.chmod(tree / relative, mode)
    (tree / "var" / "run").symlink_to("../run")
    jobs = _start_host_keys(tree, instance["hostname"])
    try:
        _install_binaries(tree)
        _write_etc(tree, instance)
    finally:
        _finish_host_keys(jobs)


def authorize(tree: Path, clipboard: dict[str, Any]) -> None:
    """root's authorized_keys: jarvis's deploy key and the design's ``sshpubkey``."""
    keys = []
    deploy = (clipboard.get("deploy_key") or {}).get("public_key")
    if deploy:
        keys.append(str(deploy).strip())
    operator = str(clipboard["instance"].get("sshpubkey") or "").strip()
    if operator:
        if "\n" in operator or "\r" in operator:
            raise StepFailed("instance.sshpubkey must be one line (one public key)")
        if operator.startswith("ssh-dss"):
            log.warning("instance.sshpubkey is a DSA (ssh-dss) key: written to authorized_keys, "
                        "but OpenSSH 9 refuses DSA, so it cannot log in")
        keys.append(operator)
    if not keys:
        log.warning("no deploy_key.public_key and no instance.sshpubkey: nobody can log in")
    write_file(tree, "root/.ssh/authorized_keys", "".join(k + "\n" for k in keys), 0o600)


# ---------------------------------------------------------------- processes

def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _ours(node: dict[str, Any], tree: Path) -> bool:
    """Whether node.json's launcher pid is still this node's ``unshare`` (not a reused pid)."""
    pid = node.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return False
    argv = _cmdline(pid)
    return bool(argv) and Path(argv[0]).name == "unshare" and str(tree) in argv


def is_running(node: dict[str, Any] | None, tree: Path) -> bool:
    return bool(node) and _ours(node, tree) and _in_use(str(node["ip"]))


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
    _write_node(host_dir, node)
    limit = float(config.current().get("providers.local.start_timeout") or 10)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StepFailed(f"the local node's sshd exited with {proc.returncode}: {_tail(host_dir)}")
        if _banner_ok(str(node["ip"])):
            children = _children(proc.pid)
            node["sshd_pid"] = children[0] if children else None
            _write_node(host_dir, node)
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
            if not _alive(launcher):
                return
            time.sleep(0.02)
        target = launcher
    raise StepFailed(f"the local node's sshd (pid {launcher}) did not stop")


# ---------------------------------------------------------------- tasks

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
    with _flock(_machine_lock()):
        node = _owned(host_dir, hostname, _read_node(host_dir))
        if node is None:
            host_dir.mkdir(mode=0o700, exist_ok=True)
            node = {"id": f"local-{hostname}-{uuid.uuid4().hex[:12]}", "name": hostname,
                    "ip": allocate(base, hostname), "port": ssh_port(), "pid": None,
                    "created": time.time()}
            _write_node(host_dir, node)
    tree = host_dir / "tree"
    if not (tree / "etc" / "ssh" / "ssh_host_rsa_key").exists():
        if tree.exists():
            shutil.rmtree(tree)
        log.info("building node %s (fresh host keys)", hostname)
        build_tree(tree, instance)
        (clipboard.get("ssh") or {}).pop("host_keys", None)
    authorize(tree, clipboard)
    write_shadow(tree, instance)
    with _flock(_machine_lock()):
        if is_running(node, tree):
            log.info("node %s already runs on %s:%d; kept", hostname, node["ip"], ssh_port())
        else:
            if _in_use(str(node["ip"])):
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
    host_dir = _host_dir(hostname)
    node = _owned(host_dir, hostname, _read_node(host_dir))
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
    _write_node(host_dir, node)
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
