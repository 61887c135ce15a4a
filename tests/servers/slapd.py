"""A real OpenLDAP slapd on loopback, holding ``dc=example,dc=com`` with ``ou=Hosts``.

Schemas: core, cosine, inetorgperson, nis (device + ipHost for hosts) and the
openssh-lpk schema shipped next to this file (ldapPublicKey / sshPublicKey),
which is what jarvis's host records use. It listens on ldap:// (StartTLS
available) and ldaps://, with a self-signed certificate for 127.0.0.1 exposed
as ``ca_file``. The root DN's password is random per
session so no test can depend on a well-known secret.
"""
from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.core.exceptions import LDAPEntryAlreadyExistsResult, LDAPException
from ldap3.utils.dn import escape_rdn

from tests.servers.process import NOBODY, ServerProcess, chown_tree, free_port

SCHEMAS = ["core", "cosine", "inetorgperson", "nis"]
LPK_SCHEMA = Path(__file__).with_name("openssh-lpk.schema")
BASE_DN = "dc=example,dc=com"
HOSTS_OU = "ou=Hosts"


@dataclass
class Slapd:
    """What a test needs to talk to the session's slapd."""

    url: str
    base_dn: str
    bind_dn: str
    password: str
    process: ServerProcess
    ldaps_url: str
    ca_file: str
    added: list[str] = field(default_factory=list)

    @property
    def hosts_dn(self) -> str:
        return f"{HOSTS_OU},{self.base_dn}"

    def start(self) -> None:
        """Start (or start again, on the same ports and data, after ``stop``)."""
        try:
            self.process.start(_bind_ready(self.url, self.bind_dn, self.password))
        except BaseException:
            self.process.stop()   # a failing readiness check must not leave slapd behind
            raise

    def stop(self) -> None:
        self.process.stop()

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """An ``ldap:`` config section for this server (as in clipboard/defaults.yaml)."""
        section: dict[str, Any] = {
            "url": self.url, "bind_dn": self.bind_dn, "bind_password": self.password,
            "bind_password_env": None, "base_dn": self.base_dn, "hosts_ou": HOSTS_OU,
            "starttls": False, "ca_file": None, "timeout": 5,
        }
        section.update(overrides)
        return section

    def connection(self) -> ldap3.Connection:
        """A bound connection as the root DN (for seeding and checking)."""
        return ldap3.Connection(ldap3.Server(self.url, connect_timeout=5), self.bind_dn,
                                self.password, auto_bind=True, receive_timeout=5)

    def add_host(self, cn: str, *, ip: str | list[str] | None = "192.0.2.10",
                 sshpubkey: str | None = None, description: str | None = None,
                 extra: dict[str, Any] | None = None, parent: str | None = None) -> str:
        """Put a host entry (device + ipHost [+ ldapPublicKey]) in place, replacing any old one."""
        dn = f"cn={escape_rdn(cn)},{parent or self.hosts_dn}"
        classes = ["device", "ipHost"]
        attributes: dict[str, Any] = {"ipHostNumber": ip or "192.0.2.10"}
        if sshpubkey is not None:
            classes.append("ldapPublicKey")
            attributes["sshPublicKey"] = sshpubkey.encode()
        if description is not None:
            attributes["description"] = description
        attributes.update(extra or {})
        conn = self.connection()
        try:
            conn.delete(dn)
            if not conn.add(dn, classes, attributes):
                raise RuntimeError(f"cannot add {dn}: {conn.result}")
        finally:
            conn.unbind()
        self.added.append(dn)
        return dn

    def remove_added(self) -> None:
        """Delete every entry ``add_host`` made, so the next test (of any module) starts clean."""
        conn = self.connection()
        try:
            while self.added:
                conn.delete(self.added.pop())
        finally:
            conn.unbind()

    def delete(self, dn: str) -> None:
        conn = self.connection()
        try:
            conn.delete(dn)
        finally:
            conn.unbind()

    def entry(self, dn: str) -> dict[str, list[Any]] | None:
        """The raw attributes of ``dn``, or None when it does not exist."""
        conn = self.connection()
        try:
            if not conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["*"]):
                return None
            return {k: list(v) for k, v in conn.response[0]["raw_attributes"].items()}
        finally:
            conn.unbind()


def _certificate(directory: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (it is its own CA, handed to clients as ca_file)."""
    cert = directory / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(directory / "server.key"),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert


def _config(directory: Path) -> Path:
    shutil.copy(LPK_SCHEMA, directory / "openssh-lpk.schema")
    (directory / "db").mkdir()
    includes = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
    conf = directory / "slapd.conf"
    conf.write_text(f"""{includes}
include {directory}/openssh-lpk.schema
pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
TLSCertificateFile {directory}/server.crt
TLSCertificateKeyFile {directory}/server.key
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 67108864
suffix "{BASE_DN}"
rootdn "cn=admin,{BASE_DN}"
rootpw {{PASSWORD}}
directory {directory}/db
index objectClass eq
index cn eq
""")
    return conf


def _seed(server: Slapd) -> None:
    conn = server.connection()
    try:
        for dn, classes, attrs in [
            (BASE_DN, ["dcObject", "organization"], {"dc": "example", "o": "Example"}),
            (f"{HOSTS_OU},{BASE_DN}", ["organizationalUnit"], {"ou": "Hosts"}),
        ]:
            try:
                conn.add(dn, classes, attrs)
            except LDAPEntryAlreadyExistsResult:
                pass
    finally:
        conn.unbind()


def _bind_ready(url: str, bind_dn: str, password: str):
    def check() -> bool:
        try:
            conn = ldap3.Connection(ldap3.Server(url, connect_timeout=0.5), bind_dn, password,
                                    receive_timeout=1)
            ok = conn.bind()
            conn.unbind()
            return bool(ok)
        except LDAPException:
            return False
    return check


def start_slapd(directory: Path) -> Slapd:
    """Configure, start and seed one slapd in ``directory`` (the caller stops it)."""
    cert = _certificate(directory)
    conf = _config(directory)
    password = secrets.token_urlsafe(18)
    conf.write_text(conf.read_text().replace("{PASSWORD}", password))
    conf.chmod(0o600)
    chown_tree(directory, NOBODY)
    check = subprocess.run(["slaptest", "-u", "-f", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"slaptest rejected the test config: {check.stderr.strip()}")
    url = f"ldap://127.0.0.1:{free_port()}"
    ldaps_url = f"ldaps://127.0.0.1:{free_port()}"
    bind_dn = f"cn=admin,{BASE_DN}"
    process = ServerProcess("slapd", ["/usr/sbin/slapd", "-d", "0", "-f", str(conf),
                                      "-h", f"{url} {ldaps_url}"],
                            log=directory / "slapd.log", user=NOBODY)
    server = Slapd(url=url, base_dn=BASE_DN, bind_dn=bind_dn, password=password, process=process,
                   ldaps_url=ldaps_url, ca_file=str(cert))
    server.start()
    try:
        _seed(server)
    except Exception:
        process.stop()
        raise
    return server


@contextlib.contextmanager
def private_slapd() -> Iterator[Slapd]:
    """A slapd of one's own, in a directory outside /tmp/pytest-of-<user>: every pytest
    session that starts resets that to 0700, and slapd, running as nobody, must still
    reach its files (on a restart too) while other sessions run beside this one."""
    directory = Path(tempfile.mkdtemp(prefix="jarvis-slapd-"))
    try:
        server = start_slapd(directory)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def slapd() -> Iterator[Slapd]:
    with private_slapd() as server:
        yield server
