"""Real ngircd servers for the test session, as ../shared/notes/test-servers.md describes.

``ngircd`` is one shared server with penalties off (``MaxPenaltyTime = 0``) so
ordinary tests are fast. ``ngircd_factory`` starts private servers: one a test
may kill and restart, or one with ngircd's *default* flood penalties, so the
flood test depends on the bot's own rate limiter and not on a lenient server, or
one that speaks only TLS with a self-signed certificate (``tls=True``).
Every server runs as nobody on a free loopback port and is stopped at the end.
"""
from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import irc.client
import irc.client_aio
import irc.connection
import pytest

from tests.servers.process import (
    NOBODY,
    ServerFactory,
    ServerProcess,
    chown_tree,
    free_port,
    self_signed_cert,
    server_factory,
    tcp_ready,
)

CHANNEL = "#ops"

_CONFIG = """[Global]
\tName = irc.test.local
\tInfo = jarvis test ircd
\tAdminInfo1 = test
\tAdminInfo2 = test
\tAdminEMail = test@test.local
\tListen = 127.0.0.1
\tPorts = {port}
\tPidFile = {dir}/ngircd.pid
[Limits]
\tMaxConnectionsIP = 0
\tMaxJoins = 0
\tMaxNickLength = 30
{penalty}[Options]
\tDNS = no
\tIdent = no
\tPAM = no
[Channel]
\tName = {channel}
\tModes = +tn
{ssl}"""
# TLS on the server's port; the plaintext port (Global, which ngircd must have) goes unused.
_SSL = """[SSL]
\tCertFile = {cert}
\tKeyFile = {key}
\tPorts = {port}
"""


@dataclass
class Ircd:
    """One ngircd: stop and start it again on the same port, as a network outage would."""

    host: str
    port: int
    directory: Path
    penalties: bool
    cert: Path | None = None  # TLS only, with this self-signed certificate
    process: ServerProcess = field(init=False)

    def __post_init__(self) -> None:
        self.process = ServerProcess(
            "ngircd", ["/usr/sbin/ngircd", "-n", "-f", str(self.directory / "ngircd.conf")],
            log=self.directory / "ngircd.log", user=NOBODY)

    def start(self) -> Ircd:
        # again on every start: a concurrent pytest session resets /tmp/pytest-of-<user> to 0700
        chown_tree(self.directory, NOBODY)
        self.process.start(tcp_ready(self.host, self.port))
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def irc_settings(self, **overrides: object) -> dict:
        """A ``chat.irc`` section pointing the bot at this server."""
        settings = {"enabled": True, "server": self.host, "port": self.port,
                    "tls": self.cert is not None, "ca_file": str(self.cert) if self.cert else None,
                    "channels": [CHANNEL], "reconnect_max_delay": 1.0}
        settings.update(overrides)
        return settings


@dataclass
class Said:
    """One PRIVMSG a test client received."""

    nick: str
    target: str
    text: str


class IrcClient:
    """A person on IRC: a real ``irc`` library client on the test's own loop."""

    def __init__(self, ircd: Ircd, nick: str) -> None:
        self.ircd = ircd
        self.nick = nick
        self.inbox: asyncio.Queue[Said] = asyncio.Queue()
        self.joined: set[str] = set()
        self._welcome = asyncio.Event()
        self.reactor = irc.client_aio.AioReactor(loop=asyncio.get_running_loop())
        self.conn = self.reactor.server()
        for event in ("pubmsg", "privmsg"):
            self.reactor.add_global_handler(event, self._on_message)
        self.reactor.add_global_handler("welcome", lambda c, e: self._welcome.set())
        self.reactor.add_global_handler("join", self._on_join)

    def _on_message(self, connection: object, event: irc.client.Event) -> None:
        self.inbox.put_nowait(Said(event.source.nick, str(event.target), event.arguments[0]))

    def _on_join(self, connection: object, event: irc.client.Event) -> None:
        if event.source.nick == self.conn.get_nickname():
            self.joined.add(str(event.target).lower())

    async def connect(self, *channels: str, timeout: float = 10) -> IrcClient:
        self._welcome.clear()
        self.joined.clear()
        async with asyncio.timeout(timeout):
            factory = irc.connection.AioFactory()
            if self.ircd.cert is not None:
                factory = irc.connection.AioFactory(
                    ssl=ssl.create_default_context(cafile=self.ircd.cert),
                    server_hostname=self.ircd.host)
            await self.conn.connect(self.ircd.host, self.ircd.port, self.nick,
                                    connect_factory=factory)
            await self._welcome.wait()
            for channel in channels:
                self.conn.join(channel)
            while not all(c.lower() in self.joined for c in channels):
                await asyncio.sleep(0.01)
        return self

    def say(self, target: str, text: str) -> None:
        self.conn.privmsg(target, text)

    async def expect(self, predicate: object = None, timeout: float = 10) -> Said:
        """The next message matching ``predicate`` (a substring or a callable); others are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                said = await self.inbox.get()
                if predicate is None or (predicate(said) if callable(predicate) else predicate in said.text):
                    return said

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect("bye")


def make_ircd(directory: Path, *, penalties: bool = False, tls: bool = False) -> Ircd:
    """Write a config for a new server in ``directory`` (not started)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    penalty = "" if penalties else "\tMaxPenaltyTime = 0\n"
    cert = key = None
    ssl_section, plain_port = "", port
    if tls:
        cert, key = self_signed_cert(directory, "localhost")
        ssl_section, plain_port = _SSL.format(cert=cert, key=key, port=port), free_port()
    conf = directory / "ngircd.conf"
    conf.write_text(_CONFIG.format(port=plain_port, dir=directory, penalty=penalty,
                                   channel=CHANNEL, ssl=ssl_section))
    check = subprocess.run(["/usr/sbin/ngircd", "--configtest", "-f", str(conf)],
                           capture_output=True, text=True, timeout=20)
    if check.returncode != 0:
        raise RuntimeError(f"ngircd --configtest failed: {check.stdout[-500:]}{check.stderr[-500:]}")
    chown_tree(directory, NOBODY)
    return Ircd("127.0.0.1", port, directory, penalties, cert)


IrcdFactory = ServerFactory[Ircd]


@pytest.fixture(scope="session")
def ngircd_factory() -> Iterator[IrcdFactory]:
    with server_factory("ngircd", make_ircd) as factory:
        yield factory


@pytest.fixture(scope="session")
def ngircd(ngircd_factory: IrcdFactory) -> Ircd:
    """The shared server (penalties off); tests must not stop it."""
    return ngircd_factory()
