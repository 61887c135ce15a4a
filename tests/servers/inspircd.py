"""Real IRCv3 servers with services for the test session: InspIRCd 3 linked to Atheme,
as ../shared/notes/more-test-servers.md §1 describes.

ngircd has no SASL and no account tags, so what the bot can learn of a speaker's
services account is tested here. InspIRCd does SASL only through linked services:
Atheme's SaslServ answers it and NickServ holds the accounts, which the fixture
registers through NickServ as a person would. ``inspircd`` is one shared server
with every capability; ``inspircd_factory`` starts private ones: without the
``account-tag`` capability (``account_tag=False``, so the bot must track accounts
from ``extended-join``, ``account-notify`` and WHOX) or with a TLS port that asks for
client certificates (``tls=True``, for SASL EXTERNAL). Both programs run as nobody
on free loopback ports with their files in the factory's temp dir; each is stopped
by its PID, services first.

Measured here: the pair is up in ~0.1 s, but InspIRCd finishes every client's
registration on its once-a-second tick, by design, so each connection costs ~1 s.
With the TLS port, inspircd 3.15 exits on SIGTERM with a segfault while unloading
ssl_gnutls (rc -11 instead of 10); it has stopped either way.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.process import (
    NOBODY,
    ServerFactory,
    ServerProcess,
    chown_tree,
    free_port,
    self_signed_cert,
    server_factory,
)

CHANNEL = "#ops"
SERVICES = "services.localhost"

_INSPIRCD = """<server name="irc.localhost" description="test ircd" network="TestNet" id="0AA">
<admin name="test" nick="test" email="test@localhost">

<bind address="127.0.0.1" port="{cport}" type="clients">
<bind address="127.0.0.1" port="{sport}" type="servers">
{tls}
<connect name="main" allow="*" resolvehostnames="no" useident="no"
         timeout="30" pingfreq="120" recvq="8K" softsendq="8K" hardsendq="1M"
         localmax="1000" globalmax="1000" threshold="1000" commandrate="1000000" fakelag="no">

<files motd="{dir}/motd.txt">
<pid file="{dir}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{dir}/inspircd.log">
<dns server="127.0.0.1" timeout="1">

<module name="spanningtree">
<module name="cap">
<module name="ircv3">
{accounttag}<module name="services_account">
<module name="sasl">
<sasl target="{services}">

<link name="{services}" ipaddr="127.0.0.1" port="{sport}"
      allowmask="127.0.0.0/8" sendpass="linkpass" recvpass="linkpass">
<uline server="{services}" silent="yes">
"""
# A TLS port that asks every client for a certificate; sslinfo hands its SHA-256
# fingerprint to services, which is what SASL EXTERNAL and NickServ CERT compare.
_TLS = """<module name="ssl_gnutls">
<module name="sslinfo">
<sslprofile name="clients" provider="gnutls" certfile="{cert}" keyfile="{key}"
            hash="sha256" requestclientcert="yes">
<bind address="127.0.0.1" port="{tport}" type="clients" ssl="clients">
"""

_ATHEME = """loadmodule "modules/protocol/inspircd";
loadmodule "modules/backend/opensex";
loadmodule "modules/crypto/posix";
loadmodule "modules/nickserv/main";
loadmodule "modules/nickserv/register";
loadmodule "modules/nickserv/identify";
loadmodule "modules/nickserv/logout";
loadmodule "modules/nickserv/cert";
loadmodule "modules/saslserv/main";
loadmodule "modules/saslserv/plain";
loadmodule "modules/saslserv/external";

serverinfo {{
	name = "{services}";
	desc = "Atheme test services";
	numeric = "0AB";
	recontime = 1;
	netname = "TestNet";
	hidehostsuffix = "users.test";
	adminname = "test";
	adminemail = "test@localhost";
	registeremail = "noreply@localhost";
	mta = "/bin/true";
	loglevel = {{ error; info; admin; network; }};
	maxlogins = 50;
	maxusers = 1000;
	mdlimit = 30;
	emaillimit = 10;
	emailtime = 300;
	auth = none;
	casemapping = rfc1459;
}};

uplink "irc.localhost" {{
	host = "127.0.0.1";
	port = {sport};
	send_password = "linkpass";
	receive_password = "linkpass";
}};

nickserv {{
	nick = "NickServ";
	user = "NickServ";
	host = "{services}";
	real = "Nickname Services";
	maxnicks = 5;
	expire = 0;
}};

saslserv {{
	nick = "SaslServ";
	user = "SaslServ";
	host = "{services}";
	real = "SASL Authentication Agent";
}};

general {{
	flood_msgs = 0;
	flood_time = 10;
	ratelimit_uses = 1000;
	ratelimit_period = 1;
	kline_time = 7;
	clone_time = 0;
	commit_interval = 5;
	default_clone_allowed = 1000;
	default_clone_warn = 1000;
	uplink_sendq_limit = 1048576;
	language = "en";
	immune_level = immune;
}};
"""

_line = re.compile(r"^(?:@(?P<tags>\S+) )?(?::(?P<prefix>\S+) )?(?P<command>\S+)(?P<rest>.*)$")


@dataclass
class Line:
    """One line from the server, parsed just enough for a test to look at it."""

    tags: dict[str, str]
    prefix: str
    command: str
    params: list[str]

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    @classmethod
    def parse(cls, raw: str) -> Line:
        match = _line.match(raw)
        assert match is not None, raw
        tags = {}
        for item in (match["tags"] or "").split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = value
        rest, params = match["rest"].lstrip(" "), []
        while rest:
            if rest.startswith(":"):
                params.append(rest[1:])
                break
            word, _, rest = rest.partition(" ")
            params.append(word)
            rest = rest.lstrip(" ")
        return cls(tags, match["prefix"] or "", match["command"].upper(), params)


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class SyncClient:
    """A blocking raw client for the fixture's own chores (readiness, registering accounts)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if self.sock.getsockname() == self.sock.getpeername():  # a TCP self-connect, not the server
            self.sock.close()
            raise ConnectionRefusedError("self-connect")
        self.buffer = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def until(self, predicate: Callable[[Line], bool]) -> Line:
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\r\n", 1)
            line = Line.parse(raw.decode(errors="replace"))
            if line.command == "PING":
                self.send(f"PONG :{line.params[-1]}")
            elif predicate(line):
                return line

    def register(self, nick: str, *, sasl: tuple[str, str] | None = None) -> None:
        if sasl:
            self.send("CAP LS 302")
            self.send("CAP REQ :sasl")
            self.until(lambda line: line.command == "CAP" and line.params[1] == "ACK")
            self.send("AUTHENTICATE PLAIN")
            self.until(lambda line: line.command == "AUTHENTICATE")
            self.send(f"AUTHENTICATE {_plain(*sasl)}")
            reply = self.until(lambda line: line.command in ("903", "904", "905", "906"))
            assert reply.command == "903", f"SASL login of {sasl[0]} failed: {reply}"
            self.send("CAP END")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        self.until(lambda line: line.command == "001")

    def close(self) -> None:
        try:
            self.send("QUIT :done")
        except OSError:
            pass
        self.sock.close()


def offers_sasl(port: int) -> Callable[[], bool]:
    """Ready once inspircd answers ``CAP LS`` with ``sasl``: only while services are linked."""
    def check() -> bool:
        try:
            client = SyncClient(port, timeout=1.0)
        except OSError:
            return False
        try:
            client.send("CAP LS 302")
            caps = client.until(lambda line: line.command == "CAP" and line.params[1] == "LS")
            return any(cap.split("=")[0] == "sasl" for cap in caps.params[-1].split())
        except OSError:
            return False
        finally:
            client.sock.close()
    return check


@dataclass
class InspIrcd:
    """InspIRCd and its Atheme: register accounts, point a bot at it, stop it."""

    host: str
    port: int
    directory: Path
    account_tag: bool
    tls_port: int | None = None
    cert: Path | None = None
    ircd: ServerProcess = field(init=False)
    services: ServerProcess = field(init=False)
    _names: Iterator[int] = field(init=False, default_factory=itertools.count)

    def __post_init__(self) -> None:
        d = self.directory
        self.ircd = ServerProcess("inspircd", ["/usr/sbin/inspircd", "--config", str(d / "inspircd.conf"),
                                               "--nofork"], log=d / "inspircd.out", user=NOBODY)
        self.services = ServerProcess(
            "atheme", ["/usr/bin/atheme-services", "-n", "-c", str(d / "atheme.conf"), "-D", str(d / "data"),
                       "-l", str(d / "atheme.log"), "-p", str(d / "atheme.pid")],
            log=d / "atheme.out", user=NOBODY)

    def start(self) -> InspIrcd:
        chown_tree(self.directory, NOBODY)
        self.ircd.start(_offers_no_error(self.port))
        self.services.start(offers_sasl(self.port))
        return self

    def stop(self) -> None:
        self.services.stop()
        self.ircd.stop()

    def irc_settings(self, **overrides: object) -> dict:
        """A ``chat.irc`` section pointing the bot at this server (its TLS port with ``tls=True``)."""
        tls = bool(overrides.get("tls"))
        settings = {"enabled": True, "server": self.host,
                    "port": self.tls_port if tls else self.port,
                    "ca_file": str(self.cert) if tls and self.cert else None,
                    "channels": [CHANNEL], "reconnect_max_delay": 1.0, "rate": 50.0, "burst": 50}
        settings.update(overrides)
        return settings

    def account(self, prefix: str, password: str | None = None) -> tuple[str, str]:
        """A new services account (its name is also the nick it was registered from)."""
        name = f"{prefix}{next(self._names)}"
        password = password or f"pw-{name}"
        client = SyncClient(self.port)
        try:
            client.register(name)
            client.send(f"PRIVMSG NickServ :REGISTER {password} {name}@example.com")
            reply = client.until(lambda line: line.command == "NOTICE" and line.nick == "NickServ"
                                 and "registered" in line.params[-1])
            assert f"{name} is now registered" in reply.params[-1].replace("\x02", ""), reply
        finally:
            client.close()
        return name, password

    def add_certificate(self, account: str, password: str, fingerprint: str) -> None:
        """Let ``account`` log in with the client certificate of ``fingerprint`` (SASL EXTERNAL)."""
        client = SyncClient(self.port)
        try:
            client.register(f"cert{account}", sasl=(account, password))
            client.send(f"PRIVMSG NickServ :CERT ADD {fingerprint}")
            reply = client.until(lambda line: line.command == "NOTICE" and line.nick == "NickServ")
            assert "added" in reply.params[-1].lower(), reply
        finally:
            client.close()


class Person:
    """Someone on the network: a raw IRCv3 client on the test's loop, logged in to a
    services account with SASL PLAIN when ``account`` is given. Deliberately not the
    bot's own ``bot.ircv3``: the people check the bot, they do not share its code."""

    def __init__(self, server: InspIrcd, nick: str, *, account: tuple[str, str] | None = None) -> None:
        self.server = server
        self.nick = nick
        self.account = account
        self.lines: asyncio.Queue[Line] = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, *channels: str, timeout: float = 10) -> Person:
        async with asyncio.timeout(timeout):
            self._reader, self._writer = await asyncio.open_connection(self.server.host, self.server.port)
            self._task = asyncio.get_running_loop().create_task(self._read())
            self.send("CAP LS 302")
            ls = await self.until(lambda line: line.command == "CAP" and line.params[1] == "LS")
            offered = {cap.split("=")[0] for cap in ls.params[-1].split()}
            wanted = ["sasl"] if self.account else []
            wanted += ["account-tag"] if "account-tag" in offered else []
            if wanted:
                self.send("CAP REQ :" + " ".join(wanted))
                ack = await self.until(lambda line: line.command == "CAP" and line.params[1] in ("ACK", "NAK"))
                assert ack.params[1] == "ACK", ack
            if self.account:
                self.send("AUTHENTICATE PLAIN")
                await self.until(lambda line: line.command == "AUTHENTICATE")
                self.send(f"AUTHENTICATE {_plain(*self.account)}")
                reply = await self.until(lambda line: line.command in ("903", "904", "905", "906"))
                assert reply.command == "903", f"SASL login of {self.account[0]} failed: {reply}"
            self.send("CAP END")
            self.send(f"NICK {self.nick}")
            self.send(f"USER {self.nick} 0 * :{self.nick}")
            await self.until(lambda line: line.command == "001")
            for channel in channels:
                await self.join(channel)
        return self

    async def join(self, channel: str) -> None:
        self.send(f"JOIN {channel}")
        await self.until(lambda line: line.command == "366" and line.params[1].lower() == channel.lower())

    async def _read(self) -> None:
        assert self._reader is not None
        while raw := await self._reader.readline():
            line = Line.parse(raw.decode(errors="replace").rstrip("\r\n"))
            if line.command == "PING":
                self.send(f"PONG :{line.params[-1]}")
            else:
                self.lines.put_nowait(line)

    def send(self, line: str) -> None:
        assert self._writer is not None, "connect first"
        self._writer.write(line.encode() + b"\r\n")

    def say(self, target: str, text: str) -> None:
        self.send(f"PRIVMSG {target} :{text}")

    def rename(self, nick: str) -> None:
        self.send(f"NICK {nick}")
        self.nick = nick

    async def until(self, predicate: Callable[[Line], bool], timeout: float = 10) -> Line:
        """The next line matching ``predicate``; the ones before it are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                if predicate(line):
                    return line

    async def expect(self, text: str, timeout: float = 10) -> Line:
        """The next PRIVMSG or NOTICE to us or our channels containing ``text``."""
        return await self.until(lambda line: line.command in ("PRIVMSG", "NOTICE")
                                and text in line.params[-1], timeout)

    async def logout(self) -> None:
        self.send("PRIVMSG NickServ :LOGOUT")
        await self.until(lambda line: line.command == "901")

    async def close(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self.send("QUIT :bye")
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, ConnectionError):
                pass


def _offers_no_error(port: int) -> Callable[[], bool]:
    """inspircd answers ``CAP LS`` (services may not be linked yet)."""
    def check() -> bool:
        try:
            client = SyncClient(port, timeout=1.0)
        except OSError:
            return False
        try:
            client.send("CAP LS 302")
            client.until(lambda line: line.command == "CAP")
            return True
        except OSError:
            return False
        finally:
            client.sock.close()
    return check


def client_certificate(directory: Path, name: str) -> tuple[Path, Path, str]:
    """A self-signed client certificate and key, and its SHA-256 fingerprint as services see it."""
    cert, key = self_signed_cert(directory, name)
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return cert, key, out.strip().split("=", 1)[1].replace(":", "").lower()


def make_inspircd(directory: Path, *, account_tag: bool = True, tls: bool = False) -> InspIrcd:
    """Write the configs of a new server and its services in ``directory`` (not started)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    (directory / "motd.txt").write_text("jarvis test network\n")
    cport, sport = free_port(), free_port()
    tls_section, tport, cert = "", None, None
    if tls:
        cert, key = self_signed_cert(directory, "localhost")
        tport = free_port()
        tls_section = _TLS.format(cert=cert, key=key, tport=tport)
    (directory / "inspircd.conf").write_text(_INSPIRCD.format(
        cport=cport, sport=sport, dir=directory, services=SERVICES, tls=tls_section,
        accounttag='<module name="ircv3_accounttag">\n' if account_tag else ""))
    (directory / "atheme.conf").write_text(_ATHEME.format(services=SERVICES, sport=sport))
    return InspIrcd("127.0.0.1", cport, directory, account_tag, tport, cert)


InspIrcdFactory = ServerFactory[InspIrcd]


@pytest.fixture(scope="session")
def inspircd_factory() -> Iterator[InspIrcdFactory]:
    with server_factory("inspircd", make_inspircd) as factory:
        yield factory


@pytest.fixture(scope="session")
def inspircd(inspircd_factory: InspIrcdFactory) -> InspIrcd:
    """The shared server with every capability; tests must not stop it."""
    return inspircd_factory()
