"""The IRC adapter: the ``irc`` library's asyncio client on the bot's own loop.

Why the shape: ``AioSimpleIRCClient`` runs its own loop, so the adapter drives an
``AioReactor`` on the running loop, one reactor per adapter (the reactor's
handlers fire for every connection it owns). A supervisor task connects,
registers (falling back to other nicks on a collision), joins, and on any loss
waits a capped, doubling delay and starts over, so an outage of the server
costs seconds, not the process. Every outgoing line goes through an ``Outbox``:
split under the 512-byte limit, rate-limited, held while disconnected or while
a channel is not (re)joined.

Who said a line: ``Incoming.identity`` is ``nick!user@host``, of which a client
chooses the nick and user; ``Incoming.account`` is the services account, and is
set only from what the server vouched for through IRCv3 (``bot/ircv3.py``, fed from
this adapter's events by ``bot/ircv3events.py``): the ``account`` tag on the message
when the server sends tags, else the per-nick table kept from extended-join,
account-notify and WHOX. With ``chat.irc.sasl`` the bot
logs in itself; a failed login is a failed connection attempt, retried like any
other (doubling delay up to ``reconnect_max_delay``), never a silent fallback to
an unauthenticated bot.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

import irc.client
import irc.client_aio
import irc.connection
from jaraco.stream import buffer

from bot.adapter import Deliver, Incoming, ReconnectingAdapter
from bot.ircv3 import Negotiation, SaslSettings
from bot.ircv3events import Ircv3Events
from bot.outbox import Outbox, setting_secret, split_text
from clipboard.errors import ConfigError

log = logging.getLogger(__name__)

WHERE = "chat.irc"
# Room left for the prefix the server adds when relaying our line:
# ":<nick>!<user>@<host> " with a host of up to 63 characters.
_HOST_ROOM = 63
_USER_ROOM = 11


class _HideSecrets(logging.Filter):
    """The irc library logs every raw line at debug level; PASS, IDENTIFY and AUTHENTICATE
    carry secrets (AUTHENTICATE's base64 is the SASL PLAIN password)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "PASS " in text or "IDENTIFY " in text.upper() or "AUTHENTICATE " in text.upper():
            record.msg, record.args = "RAW: <line with a secret, not logged>", None
        return True


for _name in ("irc.client", "irc.client_aio"):
    logging.getLogger(_name).addFilter(_HideSecrets())


class IrcAdapter(ReconnectingAdapter):
    """One IRC network: channels to sit in, private messages, reconnects."""

    name = "irc"

    def __init__(self, settings: dict[str, Any], bot_name: str) -> None:
        super().__init__(settings, bot_name)
        self.server = str(settings.get("server") or "")
        if not self.server:
            raise ConfigError(f"{WHERE}.server is not set")
        self.port = int(settings.get("port") or (6697 if settings.get("tls") else 6667))
        self.nick = str(settings.get("nick") or bot_name)
        fallbacks = [str(n) for n in settings.get("nick_fallbacks") or []]
        self.nicks = [self.nick] + (fallbacks or [self.nick + "_", self.nick + "__"]
                                    + [f"{self.nick}{i}" for i in range(1, 10)])
        self.username = str(settings.get("username") or bot_name)
        self.realname = str(settings.get("realname") or bot_name)
        self.channels = [str(c) for c in settings.get("channels") or []]
        self.password = setting_secret(settings, "password", WHERE)
        self.nickserv_password = setting_secret(settings, "nickserv_password", WHERE)
        self.nickserv_nick = str(settings.get("nickserv_nick") or "NickServ")
        self.ping_interval = float(settings.get("ping_interval") or 60)
        self.tls = bool(settings.get("tls"))
        self.tls_verify = settings.get("tls_verify", True) is not False
        self.ca_file = settings.get("ca_file")
        self.sasl = SaslSettings.from_settings(settings, self.nick, WHERE)
        self.outbox = Outbox("irc", self._transmit, rate=float(settings.get("rate") or 1.0),
                             burst=float(settings.get("burst") or 5),
                             limit=int(settings.get("queue_limit") or 10000), ready=self._ready,
                             bursting=self._cork)
        self.joined: set[str] = set()  # the same set all along: ircv3 reads it live
        self.ircv3 = Ircv3Events(self.sasl, self._ours, self.joined)
        self._reactor: irc.client_aio.AioReactor | None = None
        self._conn: irc.client_aio.AioConnection | None = None
        self._registered: asyncio.Future[None] | None = None  # welcome, or why registration failed
        self._nick_index = 0
        self._last_data = 0.0

    # -- lifecycle -------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        loop = asyncio.get_running_loop()
        self._deliver = deliver
        self._lost = asyncio.Event()
        self._reactor = irc.client_aio.AioReactor(loop=loop)
        self._conn = self._reactor.server()
        self._conn.buffer_class = buffer.LenientDecodingLineBuffer
        for event, handler in [("welcome", self._on_welcome), ("nicknameinuse", self._on_nick_taken),
                               ("erroneusnickname", self._on_nick_taken),
                               ("unavailresource", self._on_nick_taken),
                               ("join", self._on_join), ("kick", self._on_kick), ("part", self._on_part),
                               ("quit", self._on_quit), ("nick", self._on_nick),
                               ("pubmsg", self._on_pubmsg), ("privmsg", self._on_privmsg),
                               ("cannotsendtochan", self._on_cannot_send),
                               ("all_raw_messages", self._on_raw), ("disconnect", self._on_disconnect)]:
            self._reactor.add_global_handler(event, handler)
        self.ircv3.install(self._reactor)
        self._run_in_background()

    async def stop(self) -> None:
        await self._stop_background()
        if self._conn is not None and self._conn.is_connected():
            self._conn.disconnect("jarvis stopping")

    def _lines(self, target: str, text: str) -> list[str]:
        return split_text(text, self._max_text_bytes(target))

    def private_target(self, incoming: Incoming) -> str | None:
        """A PRIVMSG to the speaker's nick."""
        return incoming.nick

    # -- connecting ------------------------------------------------------

    def _factory(self) -> Any:
        """The library's factory, plus ``CAP LS 302`` written before its NICK/USER, so the
        server holds registration until the capabilities (and the login) are settled."""
        if not self.tls:
            base = irc.connection.AioFactory()
        else:
            context = ssl.create_default_context(cafile=self.ca_file or None)
            if not self.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.sasl.cert_file:
                context.load_cert_chain(self.sasl.cert_file, self.sasl.key_file)
            base = irc.connection.AioFactory(ssl=context, server_hostname=self.server)

        async def connect(protocol: Any, address: tuple[str, int]) -> Any:
            transport, made = await base(protocol, address)
            transport.write(f"{Negotiation.START}\r\n".encode())
            return transport, made
        return connect

    def where(self) -> str:
        return f"{self.server}:{self.port}"

    async def _connect_once(self) -> None:
        assert self._conn is not None and self._lost is not None
        conn = self._conn
        self.joined.clear()
        self._nick_index = 0
        self._registered = asyncio.get_running_loop().create_future()
        # a failure landing after this attempt timed out was logged already: no GC warning for it
        self._registered.add_done_callback(lambda done: done.cancelled() or done.exception())
        negotiation = self.ircv3.begin(lambda line: conn.send_raw(line), self._registration_failed)
        async with asyncio.timeout(self.connect_timeout):
            await conn.connect(self.server, self.port, self.nicks[0], password=self.password,
                               username=self.username, ircname=self.realname,
                               connect_factory=self._factory())
            self._last_data = asyncio.get_running_loop().time()
            await self._registered
        if self.sasl.mechanism:
            log.info("irc: connected to %s:%d as %s, logged in to account %s (SASL %s)", self.server,
                     self.port, conn.get_nickname(), negotiation.account, self.sasl.mechanism)
        else:
            log.info("irc: connected to %s:%d as %s", self.server, self.port, conn.get_nickname())
        if negotiation.enabled:
            log.info("irc: capabilities %s", " ".join(sorted(negotiation.enabled)))
        if self.nickserv_password:
            self._conn.privmsg(self.nickserv_nick, f"IDENTIFY {self.nickserv_password}")
        for channel in self.channels:
            self._conn.join(channel)
        try:
            async with asyncio.timeout(self.connect_timeout):
                while not all(c.lower() in self.joined for c in self.channels):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            missing = [c for c in self.channels if c.lower() not in self.joined]
            log.warning("irc: could not join %s; their lines wait until a join succeeds", missing)
        if self._lost.is_set():
            raise ConnectionError("connection lost while joining channels")
        self.connected.set()
        self.outbox.online()

    def _drop_connection(self) -> None:
        if self._conn is not None and self._conn.is_connected():
            self._conn.disconnect("reconnecting")

    async def _keepalive(self) -> None:
        """PING a silent server; a link silent for two intervals is dead even without a FIN."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval / 2)
            conn = self._conn
            if conn is None or not self.connected.is_set():
                continue
            silent = loop.time() - self._last_data
            if silent > 2 * self.ping_interval:
                log.warning("irc: no data from %s for %.0fs; reconnecting", self.server, silent)
                self._drop_connection()
            elif silent > self.ping_interval:
                try:
                    conn.ping(self.server)
                except irc.client.ServerNotConnectedError:
                    pass

    # -- events ----------------------------------------------------------

    def _ours(self, connection: irc.client.ServerConnection) -> bool:
        return connection is self._conn

    def _on_raw(self, connection: Any, event: irc.client.Event) -> None:
        if self._ours(connection):
            self._last_data = asyncio.get_running_loop().time()

    def _on_welcome(self, connection: Any, event: irc.client.Event) -> None:
        if not self._ours(connection) or self.ircv3.negotiation is None:
            return
        self.ircv3.negotiation.on_welcome()
        if self._registered is not None and not self._registered.done():
            self._registered.set_result(None)

    def _registration_failed(self, reason: str) -> None:
        """The login (or the capabilities it needs) failed: this attempt ends here."""
        log.error("irc: %s on %s; not going on without the login", reason, self.where())
        if self._registered is not None and not self._registered.done():
            self._registered.set_exception(ConnectionRefusedError(reason))

    def _on_nick_taken(self, connection: Any, event: irc.client.Event) -> None:
        if not self._ours(connection) or (self._registered is not None and self._registered.done()):
            return
        self._nick_index += 1
        if self._nick_index >= len(self.nicks):
            log.error("irc: every nick is taken (%s)", ", ".join(self.nicks))
            self._drop_connection()
            return
        log.info("irc: nick %s is taken; trying %s", self.nicks[self._nick_index - 1],
                 self.nicks[self._nick_index])
        connection.nick(self.nicks[self._nick_index])

    def _on_nick_freed(self, connection: Any, event: irc.client.Event) -> None:
        """Take the configured nick back when its holder quits or renames."""
        if (event.source and event.source.nick.lower() == self.nick.lower()
                and connection.get_nickname().lower() != self.nick.lower()):
            connection.nick(self.nick)

    def _on_quit(self, connection: Any, event: irc.client.Event) -> None:
        if self._ours(connection):
            self._on_nick_freed(connection, event)

    def _on_nick(self, connection: Any, event: irc.client.Event) -> None:
        if self._ours(connection):
            self._on_nick_freed(connection, event)

    def _on_join(self, connection: Any, event: irc.client.Event) -> None:
        if self._ours(connection) and event.source.nick == connection.get_nickname():
            self.joined.add(str(event.target).lower())
            self.outbox.wake()

    def _on_part(self, connection: Any, event: irc.client.Event) -> None:
        if self._ours(connection) and event.source.nick == connection.get_nickname():
            self.joined.discard(str(event.target).lower())

    def _on_kick(self, connection: Any, event: irc.client.Event) -> None:
        if not self._ours(connection):
            return
        channel = str(event.target)
        if event.arguments[0] != connection.get_nickname():
            return
        self.joined.discard(channel.lower())
        log.warning("irc: kicked from %s by %s; rejoining", channel, event.source.nick)
        asyncio.get_running_loop().create_task(self._rejoin(channel))

    async def _rejoin(self, channel: str) -> None:
        delay = self.min_delay
        while not self._stopping and channel.lower() not in self.joined:
            conn = self._conn
            if conn is not None and conn.is_connected():
                conn.join(channel)
            await asyncio.sleep(delay)
            delay = min(self.max_delay, delay * 2)

    def _on_cannot_send(self, connection: Any, event: irc.client.Event) -> None:
        if self._ours(connection):
            log.warning("irc: server refused a line for %s: %s", event.arguments[0],
                        event.arguments[-1])

    def _on_disconnect(self, connection: Any, event: irc.client.Event) -> None:
        if not self._ours(connection):
            return
        self.connected.clear()
        self.outbox.offline()
        self.joined.clear()
        if self._registered is not None and not self._registered.done():
            self._registered.set_exception(ConnectionError("the server closed the connection "
                                                           "before registration finished"))
        if self._lost is not None:
            self._lost.set()

    def _on_pubmsg(self, connection: Any, event: irc.client.Event) -> None:
        if not self._ours(connection):
            return
        text = self._normalise_address(event.arguments[0], connection.get_nickname())
        self._emit(Incoming(adapter=self.name, identity=str(event.source), text=text,
                            reply_to=str(event.target), room=str(event.target), nick=event.source.nick,
                            account=self.ircv3.account(event)))

    def _on_privmsg(self, connection: Any, event: irc.client.Event) -> None:
        if not self._ours(connection):
            return
        self._emit(Incoming(adapter=self.name, identity=str(event.source), text=event.arguments[0],
                            reply_to=event.source.nick, room=None, nick=event.source.nick,
                            account=self.ircv3.account(event)))

    def _normalise_address(self, text: str, current: str) -> str:
        """``jarvis_: status`` (the bot under a fallback nick) reads as ``jarvis: status`` to the core."""
        if current.lower() != self.bot_name.lower() and text.lower().startswith(current.lower()):
            rest = text[len(current):]
            if rest[:1] in (":", ","):
                return self.bot_name + rest
        return text

    # -- sending ---------------------------------------------------------

    def _ready(self, target: str) -> bool:
        return not irc.client.is_channel(target) or target.lower() in self.joined

    def _transmit(self, target: str, line: str) -> None:
        if self._conn is None or not self._conn.is_connected():
            raise irc.client.ServerNotConnectedError("not connected")
        self._conn.privmsg(target, line)

    def _cork(self, on: bool) -> None:
        """Hold the lines of a burst in the kernel and send them as one segment.

        An answer of two lines written separately reaches the server as two reads,
        and a server that does not set TCP_NODELAY (ngircd) relays the second only
        once the client has acknowledged the first: the client's delayed ACK then
        holds the next answer ~40 ms (bench/chat_latency.py saw p99 45 ms, 4 ms corked).
        """
        transport = getattr(self._conn, "transport", None)  # none before the first connect
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and hasattr(socket, "TCP_CORK"):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))
            except OSError:
                pass  # closing under us: the next connection starts uncorked

    def _max_text_bytes(self, target: str) -> int:
        """Bytes of text that fit one line once the server has prefixed it for the receivers."""
        nick = max(len(n.encode()) for n in self.nicks)
        overhead = (1 + nick + 1 + _USER_ROOM + 1 + _HOST_ROOM + 1
                    + len(f"PRIVMSG {target} :".encode()) + 2)
        return 512 - overhead
