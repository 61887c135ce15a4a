"""A real BIND 9 ``named`` for the test session: zone ``example.com`` and the
reverse zones ``REVERSE_ZONES`` (127.0.0.0/8 and 2001:db8::/32) accepting
RFC 2136 updates signed with one TSIG key, as ../shared/notes/test-servers.md
describes. Tests check what dnswizard did with their own resolver
(``Named.lookup``), never through dnswizard's code.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests.servers.process import NOBODY, ServerProcess, chown_tree, free_port

ZONE = "example.com"
KEY_NAME = "jarvis-key"
ALGORITHM = "hmac-sha256"
REVERSE_ZONES = ("127.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")

_ZONE_FILE = """$TTL 300
@   IN SOA ns1.example.com. hostmaster.example.com. ( 1 3600 600 86400 300 )
    IN NS ns1.example.com.
ns1 IN A 127.0.0.1
"""
_REVERSE_FILE = """$TTL 300
@   IN SOA ns1.example.com. hostmaster.example.com. ( 1 3600 600 86400 300 )
    IN NS ns1.example.com.
"""


@dataclass
class Named:
    host: str
    port: int
    zone: str
    key_name: str
    algorithm: str
    secret: str
    directory: Path
    process: ServerProcess

    def dns_config(self, **overrides: Any) -> dict[str, Any]:
        """The ``dns:`` section of a jarvis configuration pointing at this server (without
        reverse zones unless ``reverse_zones`` is given: ``REVERSE_ZONES``)."""
        section = {"server": self.host, "port": self.port, "zone": self.zone, "ttl": 300,
                   "tsig_key_name": self.key_name, "tsig_algorithm": self.algorithm,
                   "tsig_secret": self.secret, "timeout": 5}
        section.update(overrides)
        return section

    def lookup(self, name: str, rdtype: str) -> set[str]:
        """The rdata texts the server answers for ``name``/``rdtype`` (empty if none)."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = 5
        try:
            answer = resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return set()
        return {rdata.to_text().lower() for rdata in answer}


def _udp_and_tcp_port(host: str) -> int:
    """A port free for both TCP and UDP, since named listens on both."""
    for _ in range(50):
        port = free_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def _soa_ready(host: str, port: int) -> Any:
    def check() -> bool:
        query = dns.message.make_query(ZONE, dns.rdatatype.SOA)
        try:
            response = dns.query.udp(query, host, port=port, timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return response.rcode() == dns.rcode.NOERROR and len(response.answer) == 1
    return check


def _prepare(directory: Path, host: str, port: int) -> str:
    """Write key, zone and named.conf into ``directory``; return the TSIG secret."""
    key_text = subprocess.run(["tsig-keygen", "-a", ALGORITHM, KEY_NAME], check=True,
                              capture_output=True, text=True, timeout=10).stdout
    secret = re.search(r'secret "([^"]+)"', key_text).group(1)  # type: ignore[union-attr]
    (directory / "tsig.key").write_text(key_text)
    (directory / "example.com.zone").write_text(_ZONE_FILE)
    reverse = ""
    for zone in REVERSE_ZONES:
        (directory / f"{zone}.zone").write_text(_REVERSE_FILE)
        reverse += f"""zone "{zone}" {{
    type primary;
    file "{directory}/{zone}.zone";
    update-policy {{ grant {KEY_NAME} zonesub ANY; }};
}};
"""
    (directory / "named.conf").write_text(f"""include "{directory}/tsig.key";
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    managed-keys-directory "{directory}";
    listen-on port {port} {{ {host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ 127.0.0.0/8; }};
    allow-transfer {{ none; }};
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{ZONE}" {{
    type primary;
    file "{directory}/example.com.zone";
    update-policy {{ grant {KEY_NAME} zonesub ANY; }};
}};
{reverse}""")
    subprocess.run(["named-checkconf", str(directory / "named.conf")], check=True,
                   capture_output=True, timeout=10)
    subprocess.run(["named-checkzone", ZONE, str(directory / "example.com.zone")], check=True,
                   capture_output=True, timeout=10)
    chown_tree(directory, NOBODY)
    return secret


@contextlib.contextmanager
def private_named() -> Iterator[Named]:
    """A named of its own (for the session fixture, and for benchmarks outside pytest).

    Not under tmp_path_factory: named writes its journal there for the whole
    session, and concurrent pytest sessions on this machine prune each other's
    numbered directories (seen as SERVFAIL "journal open failed").
    """
    directory = Path(tempfile.mkdtemp(prefix="jarvis-named-"))
    host = "127.0.0.1"
    port = _udp_and_tcp_port(host)
    process = ServerProcess("named", ["/usr/sbin/named", "-g", "-c", str(directory / "named.conf")],
                            log=directory / "named.log", user=NOBODY)
    try:
        secret = _prepare(directory, host, port)
        process.start(_soa_ready(host, port))
        yield Named(host, port, ZONE, KEY_NAME, ALGORITHM, secret, directory, process)
    finally:
        process.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def named() -> Iterator[Named]:
    with private_named() as server:
        yield server
