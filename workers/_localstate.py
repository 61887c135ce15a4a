"""Where local nodes live and which loopback address each has.

A node's record is ``<state_dir>/<hostname>/node.json`` (id, address, pids), so
that ``local:poweroff`` and ``local:destroy`` work from a fresh process, after
jarvis restarted. Addresses are 127.0.x.y in an order fixed by the hostname;
one lock for the whole machine serialises allocation, because nodes of other
state directories share 127/8 too.
"""
from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipboard import config
from clipboard.errors import StepFailed
from clipboard.validate import check_hostname

NODE_FILE = "node.json"


def base_dir() -> Path:
    """Where nodes live: ``providers.local.state_dir``, else ``<jarvis state>/local``."""
    configured = config.current().providers.local.state_dir
    return Path(configured) if configured else config.state_dir() / "local"


def host_dir_of(hostname: str) -> Path:
    """The state directory of ``hostname``'s node (the name checked first: it is a path)."""
    return base_dir() / check_hostname(hostname)


def read_node(host_dir: Path) -> dict[str, Any] | None:
    """The node's record, None when there is none; an unreadable one is one clear error."""
    try:
        data = json.loads((host_dir / NODE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StepFailed(f"local node state {host_dir / NODE_FILE} is unreadable: {exc}") from None
    return data if isinstance(data, dict) else None


def write_node(host_dir: Path, node: dict[str, Any]) -> None:
    """Replace the node's record atomically: a crash never leaves half a node.json."""
    tmp = host_dir / (NODE_FILE + ".tmp")
    tmp.write_text(json.dumps(node, indent=2, sort_keys=True) + "\n")
    tmp.replace(host_dir / NODE_FILE)


@contextmanager
def flock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (released when the file closes)."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def machine_lock() -> Path:
    """One lock for the whole machine: nodes of other state directories share 127/8 too."""
    run_lock = Path("/run/lock")
    return (run_lock if run_lock.is_dir() else Path(tempfile.gettempdir())) / "jarvis-local.lock"


# ---------------------------------------------------------------- addresses

def candidates(hostname: str) -> Iterator[str]:
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
    return config.current().providers.local.port


def in_use(ip: str) -> bool:
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
        node = read_node(entry) if entry.is_dir() and entry.name != hostname else None
        if node and node.get("ip"):
            taken.add(str(node["ip"]))
    for ip in candidates(hostname):
        address = ipaddress.ip_address(ip)
        if address in ipaddress.ip_network("127.0.0.0/8") and ip not in taken and not in_use(ip):
            return ip
    raise StepFailed(f"no free 127.0.x.y address is left for a local node on port {ssh_port()} "
                     "(if this machine's own sshd listens on every address, set "
                     "providers.local.port to another port)")
