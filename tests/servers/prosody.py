"""Real prosody servers for the test session, as ../shared/notes/test-servers.md describes.

Plaintext c2s on a free loopback port, host ``localhost``, MUC component
``conference.localhost`` with unlocked rooms, accounts made with ``prosodyctl``,
everything as nobody (prosody refuses root). ``prosody`` is shared;
``prosody_factory`` gives a test its own server to kill and restart, one that
requires STARTTLS with a self-signed certificate (``tls=True``), or one whose new
rooms show occupants' real JIDs to everyone (``public_jids=True``, prosody's
``muc_room_default_public_jids``). Rooms are otherwise prosody's default,
semi-anonymous: only moderators see real JIDs; ``XmppClient.configure`` changes
that the way a room owner does, with the room's configuration form.
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from tests.servers.process import (
    NOBODY,
    ServerFactory,
    ServerProcess,
    chown_tree,
    free_port,
    self_signed_cert,
    server_factory,
)

DOMAIN = "localhost"
MUC = "conference.localhost"
ROOM = f"ops@{MUC}"

_CONFIG = """pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
certificates = "{dir}/certs"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
{encryption}s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
allow_registration = false
VirtualHost "{domain}"
Component "{muc}" "muc"
    restrict_room_creation = false
    muc_room_locking = false
    muc_room_default_public_jids = {public_jids}
"""


_PLAINTEXT = """modules_enabled = { "roster", "saslauth", "disco", "ping", "presence", "message", "iq", "posix" }
modules_disabled = { "s2s", "tls", "offline" }
c2s_require_encryption = false
"""
_STARTTLS = """modules_enabled = { "roster", "saslauth", "disco", "ping", "presence", "message", "iq", "posix", "tls" }
modules_disabled = { "s2s", "offline" }
c2s_require_encryption = true
ssl = { certificate = "%s", key = "%s" }
"""


def _stream_ready(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5) as sock:
                sock.sendall(f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' "
                             "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>".encode())
                data = b""
                while b"features" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
                return True
        except OSError:
            return False
    return check


@dataclass
class Prosody:
    """One prosody; ``kill`` and ``start`` again simulate an outage on the same port."""

    host: str
    port: int
    directory: Path
    cert: Path | None = None  # STARTTLS required, with this self-signed certificate
    process: ServerProcess = field(init=False)

    def __post_init__(self) -> None:
        self.process = ServerProcess(
            "prosody", ["prosody", "-F", "--config", str(self.config)],
            log=self.directory / "prosody.out", user=NOBODY)

    @property
    def config(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    def start(self) -> Prosody:
        # again on every start: a concurrent pytest session resets /tmp/pytest-of-<user> to 0700
        chown_tree(self.directory, NOBODY)
        self.process.start(_stream_ready(self.host, self.port))
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def register(self, user: str, password: str) -> str:
        """Create an account (idempotent); returns its bare JID."""
        result = subprocess.run(["prosodyctl", "--config", str(self.config), "register", user, DOMAIN,
                                 password], capture_output=True, text=True, timeout=30,
                                user=NOBODY, group=NOBODY)
        if result.returncode != 0:
            raise RuntimeError(f"prosodyctl register {user} failed: {result.stdout}{result.stderr}")
        return f"{user}@{DOMAIN}"

    def xmpp_settings(self, jid: str, password: str, **overrides: Any) -> dict[str, Any]:
        """A ``chat.xmpp`` section pointing the bot at this server (STARTTLS trusting its
        certificate when it has one, else plaintext)."""
        settings = {"enabled": True, "jid": jid, "password": password, "server": self.host,
                    "port": self.port, "tls": self.cert is not None,
                    "ca_file": str(self.cert) if self.cert else None, "rooms": [ROOM],
                    "reconnect_max_delay": 1.0}
        settings.update(overrides)
        return settings


def make_prosody(directory: Path, *, tls: bool = False, public_jids: bool = False) -> Prosody:
    for sub in ("data", "certs"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    cert = None
    modules = _PLAINTEXT
    if tls:
        cert, key = self_signed_cert(directory / "certs", DOMAIN, MUC)
        modules = _STARTTLS % (cert, key)
    (directory / "prosody.cfg.lua").write_text(
        _CONFIG.format(dir=directory, port=port, domain=DOMAIN, muc=MUC, encryption=modules,
                       public_jids=str(public_jids).lower()))
    chown_tree(directory, NOBODY)
    return Prosody("127.0.0.1", port, directory, cert)


ProsodyFactory = ServerFactory[Prosody]


@pytest.fixture(scope="session")
def prosody_factory() -> Iterator[ProsodyFactory]:
    with server_factory("prosody", make_prosody) as factory:
        yield factory


@pytest.fixture(scope="session")
def prosody(prosody_factory: ProsodyFactory) -> Prosody:
    """The shared server; tests must not stop it."""
    return prosody_factory()


@dataclass
class Heard:
    """One message a test client received."""

    sender: str      # full JID (room/nick for a room)
    kind: str        # chat | groupchat
    text: str


class XmppClient:
    """A person on Jabber: a real slixmpp client, plaintext or STARTTLS as the server wants."""

    def __init__(self, server: Prosody, jid: str, password: str) -> None:
        self.server = server
        self.inbox: asyncio.Queue[Heard] = asyncio.Queue()
        plaintext = server.cert is None
        self.xmpp = slixmpp.ClientXMPP(f"{jid}/test", password, plugin_config={
            "feature_mechanisms": {"unencrypted_plain": plaintext, "unencrypted_scram": plaintext}})
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_starttls = not plaintext
        self.xmpp.enable_plaintext = plaintext
        if server.cert is not None:
            self.xmpp.ca_certs = server.cert
        for plugin in ("xep_0004", "xep_0030", "xep_0045"):
            self.xmpp.register_plugin(plugin)
        self.xmpp.add_event_handler("message", self._on_message)
        self._session = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda event: self._session.set())

    def _on_message(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal", "groupchat") and msg["body"] and not msg["delay"]["stamp"]:
            self.inbox.put_nowait(Heard(str(msg["from"]), str(msg["type"]), str(msg["body"])))

    async def connect(self, timeout: float = 10) -> XmppClient:
        self._session.clear()
        self.xmpp.connect(self.server.host, self.server.port)
        async with asyncio.timeout(timeout):
            await self._session.wait()
        self.xmpp.send_presence()
        return self

    async def join(self, room: str, nick: str) -> None:
        await self.xmpp.plugin["xep_0045"].join_muc_wait(room, nick, maxstanzas=0, timeout=10)

    async def configure(self, room: str, **fields: str) -> None:
        """As the room's owner, submit its configuration form with ``muc#roomconfig_<name>``
        set for each ``name=value`` (``whois="anyone"`` makes real JIDs visible to all)."""
        form = self.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
        for name, value in fields.items():
            form.add_field(var=f"muc#roomconfig_{name}", value=value)
        await self.xmpp.plugin["xep_0045"].set_room_config(room, form, timeout=10)

    async def set_role(self, room: str, nick: str, role: str) -> None:
        await self.xmpp.plugin["xep_0045"].set_role(room, nick, role, timeout=10)

    def change_nick(self, room: str, nick: str) -> None:
        self.xmpp.send_presence(pto=f"{room}/{nick}")

    async def leave(self, room: str, nick: str) -> None:
        """Leave ``room`` and wait until the room says we are out (the nick is free)."""
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_presence(presence: Any) -> None:
            if (presence["from"].bare == room and presence["type"] == "unavailable"
                    and 110 in presence["muc"]["status_codes"] and not gone.done()):
                gone.set_result(None)
        self.xmpp.add_event_handler("groupchat_presence", on_presence)
        try:
            self.xmpp.plugin["xep_0045"].leave_muc(room, nick)
            await asyncio.wait_for(gone, 10)
        finally:
            self.xmpp.del_event_handler("groupchat_presence", on_presence)

    def chat(self, to: str, text: str) -> None:
        self.xmpp.send_message(mto=to, mbody=text, mtype="chat")

    def groupchat(self, room: str, text: str) -> None:
        self.xmpp.send_message(mto=room, mbody=text, mtype="groupchat")

    async def expect(self, predicate: Any = None, timeout: float = 10) -> Heard:
        """The next message matching ``predicate`` (a substring or a callable); others are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                heard = await self.inbox.get()
                if predicate is None or (predicate(heard) if callable(predicate) else predicate in heard.text):
                    return heard

    async def close(self) -> None:
        if self.xmpp.transport is not None:
            await self.xmpp.disconnect(wait=1)
