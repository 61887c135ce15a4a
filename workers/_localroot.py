"""The local node's root filesystem: a small tree that becomes the node's ``/``.

A static busybox, sshd, setpriv, ssh-keygen and their libraries, the files of
/etc a login needs, fresh host keys, root's authorized_keys and password. The
tree belongs to the node's root, so every write into it refuses symlinks
(``write_file``): jarvis runs as root on the machine.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from clipboard import config
from clipboard.errors import StepFailed
from workers._localstate import ssh_port

log = logging.getLogger(__name__)

HOST_KEYS = {"ed25519": ["-t", "ed25519"], "ecdsa": ["-t", "ecdsa", "-b", "256"],
             "rsa": ["-t", "rsa", "-b", "3072"]}
REQUIRED_BINARIES = ["/usr/sbin/sshd", "/usr/bin/setpriv", "/usr/bin/ssh-keygen"]
TREE_DIRS = {"bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc/ssh": 0o755,
             "root": 0o700, "root/.ssh": 0o700, "proc": 0o555, "run": 0o755, "dev": 0o755,
             "tmp": 0o1777, "var/log": 0o755, "var/empty": 0o755, "home": 0o755, "mnt": 0o755,
             ".oldroot": 0o700}
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



def busybox_path() -> Path:
    """The static busybox copied into every tree: ``providers.local.busybox``."""
    return Path(config.current().providers.local.busybox)


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
    result = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30,
                            check=False)
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
    extra = config.current().providers.local.binaries
    for binary in dict.fromkeys([*REQUIRED_BINARIES, *extra]):
        _copy_in(tree, binary)
        for library in _libraries(binary):
            _copy_in(tree, library)
    busybox = tree / "bin" / "busybox"
    shutil.copy2(busybox_path(), busybox)
    for library in _libraries(str(busybox_path())):
        _copy_in(tree, library)
    applets = subprocess.run([str(busybox_path()), "--list"], capture_output=True, text=True,
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
                            capture_output=True, text=True, timeout=30, check=False)
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
