"""The Jabber adapter: slixmpp on the bot's loop, 1:1 chat and rooms (XEP-0045).

Why not slixmpp's own reconnects: it retries a failed connect with a delay that
doubles up to five minutes, and its ping keepalive reconnects behind the caller's
back. The adapter cancels those retries and leaves reconnecting to the supervisor
it shares with IRC (``bot.adapter.ReconnectingAdapter``), so a restarted server
is back within seconds. Outgoing messages go through the shared ``Outbox``
(rate-limited, held while disconnected or while a room is not (re)joined, long
answers split and packed).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from bot.adapter import Deliver, Incoming, ReconnectingAdapter
from bot.outbox import Outbox, pack_lines, setting_secret, split_text
from clipboard.errors import ConfigError

log = logging.getLogger(__name__)

WHERE = "chat.xmpp"


class XmppAdapter(ReconnectingAdapter):
    """One XMPP account: direct chats and the configured rooms."""

    name = "xmpp"

    def __init__(self, settings: dict[str, Any], bot_name: str) -> None:
        super().__init__(settings, bot_name)
        jid = JID(str(settings.get("jid") or ""))
        if not jid.user or not jid.domain:
            raise ConfigError(f"{WHERE}.jid must be an account like jarvis@example.com "
                              f"(got {settings.get('jid')!r})")
        password = setting_secret(settings, "password", WHERE)
        if password is None:
            raise ConfigError(f"{WHERE}.password is not set (set it, or name an environment "
                              f"variable in {WHERE}.password_env)")
        self.jid = JID(f"{jid.bare}/{settings.get('resource') or bot_name}")
        self._password = password
        self.server = settings.get("server") or None
        self.port = int(settings.get("port") or 5222)
        self.tls = settings.get("tls", True) is not False
        self.direct_tls = bool(settings.get("direct_tls"))
        self.ca_file = settings.get("ca_file") or None
        self.rooms = [JID(str(room)).bare for room in settings.get("rooms") or []]
        self.nick = str(settings.get("nick") or bot_name)
        self.max_bytes = int(settings.get("max_bytes") or 3000)
        self.ping_interval = float(settings.get("ping_interval") or 60)
        self.outbox = Outbox("xmpp", self._transmit, rate=float(settings.get("rate") or 5.0),
                             burst=float(settings.get("burst") or 10),
                             limit=int(settings.get("queue_limit") or 10000), ready=self._ready)
        self.joined: set[str] = set()
        self.xmpp: slixmpp.ClientXMPP | None = None
        self._session: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------

    def _client(self) -> slixmpp.ClientXMPP:
        plugin_config: dict[str, Any] = {}
        if not self.tls:
            plugin_config["feature_mechanisms"] = {"unencrypted_plain": True, "unencrypted_scram": True}
        client = slixmpp.ClientXMPP(str(self.jid), self._password, plugin_config=plugin_config)
        client.enable_plaintext = not self.tls
        client.enable_starttls = self.tls and not self.direct_tls
        client.enable_direct_tls = self.tls and self.direct_tls
        if self.ca_file:
            client.ca_certs = Path(self.ca_file)
        for plugin in ("xep_0030", "xep_0045", "xep_0199"):
            client.register_plugin(plugin)
        for event, handler in [("session_start", self._on_session_start),
                               ("disconnected", self._on_lost), ("connection_failed", self._on_lost),
                               ("failed_all_auth", self._on_auth_failed),
                               ("message", self._on_message), ("groupchat_message", self._on_groupchat),
                               ("groupchat_presence", self._on_room_presence)]:
            client.add_event_handler(event, handler)
        return client

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._session = asyncio.Event()
        self._lost = asyncio.Event()
        self.xmpp = self._client()
        self._run_in_background()

    async def stop(self) -> None:
        await self._stop_background()
        if self.xmpp is not None:
            self.xmpp.cancel_connection_attempt()
            if self.xmpp.transport is not None:
                try:
                    await asyncio.wait_for(self.xmpp.disconnect(wait=1), 3)
                except TimeoutError:
                    self.xmpp.abort()

    def send(self, target: str, text: str) -> None:
        self.outbox.put(target, pack_lines(split_text(text, self.max_bytes), self.max_bytes))

    # -- connecting ------------------------------------------------------

    def where(self) -> str:
        return f"{self.server or self.jid.domain} as {self.jid.bare}"

    async def _connect_once(self) -> None:
        assert self.xmpp is not None and self._session is not None and self._lost is not None
        self._session.clear()
        if self.server:
            self.xmpp.connect(str(self.server), self.port)
        else:
            self.xmpp.connect()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await _first(self._session, self._lost)
        except TimeoutError:
            raise ConnectionError(f"no session after {self.connect_timeout:g}s") from None
        if self._lost.is_set():
            raise ConnectionError("the connection failed or the login was refused")

    def _drop_connection(self) -> None:
        assert self.xmpp is not None
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            self.xmpp.abort()

    async def _keepalive(self) -> None:
        """Ping the server; no answer means a dead link even without a FIN: drop it."""
        while True:
            await asyncio.sleep(self.ping_interval)
            if self.xmpp is None or not self.connected.is_set():
                continue
            try:
                await self.xmpp.plugin["xep_0199"].ping(timeout=self.ping_interval)
            except IqTimeout:
                log.warning("xmpp: no answer to ping for %.0fs; reconnecting", self.ping_interval)
                self.xmpp.abort()
            except IqError:
                pass  # an error reply still proves the link is alive

    # -- events ----------------------------------------------------------

    def _on_session_start(self, event: Any) -> None:
        assert self.xmpp is not None and self._session is not None
        self.xmpp.send_presence()
        self.joined.clear()
        for room in self.rooms:
            self._join(room)
        log.info("xmpp: session started as %s", self.xmpp.boundjid)
        self.connected.set()
        self._session.set()
        self.outbox.online()

    def _join(self, room: str) -> None:
        assert self.xmpp is not None
        future = self.xmpp.plugin["xep_0045"].join_muc(JID(room), self.nick)
        future.add_done_callback(lambda done: _log_join_failure(room, done))

    def _on_lost(self, event: Any) -> None:
        self.connected.clear()
        self.outbox.offline()
        self.joined.clear()
        if self._lost is not None:
            self._lost.set()

    def _on_auth_failed(self, event: Any) -> None:
        log.error("xmpp: the server refused the password for %s", self.jid.bare)

    def _on_room_presence(self, presence: Any) -> None:
        room = presence["from"].bare
        if room not in self.rooms or 110 not in presence["muc"]["status_codes"]:
            return
        if presence["type"] == "unavailable":
            self.joined.discard(room)
            if not self._stopping and self.connected.is_set():
                log.warning("xmpp: removed from %s; rejoining", room)
                asyncio.get_running_loop().call_later(self.min_delay, self._rejoin, room)
        else:
            self.joined.add(room)
            self.outbox.wake()

    def _rejoin(self, room: str) -> None:
        if room not in self.joined and self.connected.is_set():
            self._join(room)

    def _on_message(self, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        sender = msg["from"]
        if sender.bare in self.rooms:       # a private message from a room occupant
            identity = self._occupant_identity(sender.bare, sender.resource)
        else:
            identity = sender.bare
        self._emit(Incoming(adapter=self.name, identity=identity, text=str(msg["body"]),
                            reply_to=str(sender), room=None, nick=sender.resource or sender.user))

    def _on_groupchat(self, msg: Any) -> None:
        room, nick = msg["from"].bare, msg["mucnick"]
        if not msg["body"] or msg["delay"]["stamp"] or nick == self._our_nick(room):
            return                              # subject changes, history replay, our own echo
        self._emit(Incoming(adapter=self.name, identity=self._occupant_identity(room, nick),
                            text=str(msg["body"]), reply_to=room, room=room, nick=nick))

    def _our_nick(self, room: str) -> str:
        assert self.xmpp is not None
        try:
            return self.xmpp.plugin["xep_0045"].get_our_jid_in_room(JID(room)).split("/", 1)[1]
        except KeyError:
            return self.nick

    def _occupant_identity(self, room: str, nick: str) -> str:
        """The occupant's real bare JID when the room shows it to us, else ``room/nick``."""
        assert self.xmpp is not None
        real = self.xmpp.plugin["xep_0045"].get_jid_property(JID(room), nick, "jid")
        return JID(real).bare if real else f"{room}/{nick}"

    # -- sending ---------------------------------------------------------

    def _ready(self, target: str) -> bool:
        jid = JID(target)
        return jid.resource != "" or jid.bare not in self.rooms or jid.bare in self.joined

    def _transmit(self, target: str, text: str) -> None:
        if self.xmpp is None or not self.connected.is_set() or self.xmpp.transport is None:
            raise ConnectionError("not connected")
        jid = JID(target)
        kind = "groupchat" if jid.bare in self.rooms and not jid.resource else "chat"
        self.xmpp.send_message(mto=jid, mbody=text, mtype=kind)


async def _first(*events: asyncio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _log_join_failure(room: str, done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("xmpp: could not join %s: %s", room, done.exception())
