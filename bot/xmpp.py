"""The Jabber adapter: slixmpp on the bot's loop, 1:1 chat and rooms (XEP-0045).

Why not slixmpp's own reconnects: it retries a failed connect with a delay that
doubles up to five minutes, and its ping keepalive reconnects behind the caller's
back. The adapter cancels those retries and leaves reconnecting to the supervisor
it shares with IRC (``bot.adapter.ReconnectingAdapter``), so a restarted server
is back within seconds. Outgoing messages go through the shared ``Outbox``
(rate-limited, held while disconnected or while a room is not (re)joined, long
answers split and packed).

Who speaks in a room: a message from ``room@conference/nick`` names only a nick, which
anyone may take. The real JID behind it is in the occupant's MUC presence
(``<x xmlns='http://jabber.org/protocol/muc#user'><item jid=…>``), which the room's
service sends to the bot when the room is non-anonymous or the bot is a moderator.
``Occupants`` keeps nick → real bare JID per room from every such presence (the
burst on joining included, nick changes and leaves followed); a speaker whose real
JID the room did not show is ``room/nick`` and *unverified*, and ``bot.acl`` gives
them no privileged command. The table is ours rather than slixmpp's because slixmpp
keeps its occupants after we are kicked or disconnected, and updates them only after
our presence handler has run.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

import slixmpp
from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from bot.adapter import Deliver, Incoming, ReconnectingAdapter
from bot.outbox import Outbox, pack_lines, setting_secret, split_text
from clipboard.errors import ConfigError

log = logging.getLogger(__name__)

WHERE = "chat.xmpp"

# XEP-0045 status codes: 110 this presence is ours, 303 nick change,
# 172 the room now shows real JIDs to everyone.
SELF, NICK_CHANGE, NOW_NON_ANONYMOUS = 110, 303, 172


class Occupants:
    """Nick → real bare JID (None while the room hides it) for each room we are in.

    An entry exists from the occupant's first presence to their leaving; a later
    presence without a JID keeps the one already learned (the room stopped showing
    JIDs, or the bot stopped being a moderator, but the nick still belongs to the same
    person until it leaves)."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, str | None]] = {}

    def reset(self, room: str) -> None:
        """Forget ``room``'s occupants: we left it, and hear them all again on rejoining."""
        self._rooms[room] = {}

    def clear(self) -> None:
        self._rooms.clear()

    def present(self, room: str, nick: str, real: str | None) -> None:
        occupants = self._rooms.setdefault(room, {})
        occupants[nick] = real or occupants.get(nick)

    def left(self, room: str, nick: str, new_nick: str | None = None) -> None:
        """``nick`` left, or (``new_nick``) is now called that: the same person moves."""
        occupants = self._rooms.get(room, {})
        real = occupants.pop(nick, None)
        if new_nick:
            occupants[new_nick] = real

    def real_jid(self, room: str, nick: str) -> str | None:
        return self._rooms.get(room, {}).get(nick)


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
        self.occupants = Occupants()
        self.moderating: set[str] = set()  # rooms where our role is moderator
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
                               ("groupchat_presence", self._on_room_presence),
                               ("groupchat_config_status", self._on_room_config)]:
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

    def _lines(self, target: str, text: str) -> list[str]:
        return pack_lines(split_text(text, self.max_bytes), self.max_bytes)

    def private_target(self, incoming: Incoming) -> str | None:
        """The speaker's real JID when the room showed it (a direct chat), else a
        private message through the room to ``room/nick``."""
        if incoming.room is None:
            return None
        return incoming.identity if incoming.verified else f"{incoming.room}/{incoming.nick}"

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
        self.moderating.clear()
        self.occupants.clear()
        if self._lost is not None:
            self._lost.set()

    def _on_auth_failed(self, event: Any) -> None:
        log.error("xmpp: the server refused the password for %s", self.jid.bare)

    def _on_room_presence(self, presence: Any) -> None:
        room, nick = presence["from"].bare, presence["from"].resource
        if room not in self.rooms or not nick or presence["type"] == "error":
            return
        codes = presence["muc"]["status_codes"]
        if SELF in codes:
            self._on_own_presence(room, presence)
        elif presence["type"] == "unavailable":
            new_nick = presence["muc"]["item_nick"] if NICK_CHANGE in codes else None
            self.occupants.left(room, nick, new_nick)
        else:
            real = presence["muc"]["jid"]
            self.occupants.present(room, nick, real.bare if real.bare else None)

    def _on_own_presence(self, room: str, presence: Any) -> None:
        if presence["type"] != "unavailable":
            promoted = presence["muc"]["role"] == "moderator" and room not in self.moderating
            if presence["muc"]["role"] == "moderator":
                self.moderating.add(room)
            else:
                self.moderating.discard(room)
            if promoted and room in self.joined:
                self._resync(room, "the bot is now a moderator there")
            self.joined.add(room)
            self.outbox.wake()
        elif NICK_CHANGE not in presence["muc"]["status_codes"]:
            self.joined.discard(room)
            self.moderating.discard(room)
            self.occupants.reset(room)
            if not self._stopping and self.connected.is_set():
                log.warning("xmpp: removed from %s; rejoining", room)
                asyncio.get_running_loop().call_later(self.min_delay, self._rejoin, room)

    def _on_room_config(self, msg: Any) -> None:
        room = msg["from"].bare
        if (room in self.joined and not msg["from"].resource
                and NOW_NON_ANONYMOUS in msg["muc"]["status_codes"]):
            self._resync(room, "it now shows real JIDs to everyone")

    def _resync(self, room: str, why: str) -> None:
        """Ask ``room`` for every occupant's presence again, now that they will carry real
        JIDs: prosody resends none by itself when a room turns non-anonymous or when the
        bot is made a moderator with a role (only with an admin or owner affiliation).
        XEP-0045's answer to a join presence from an occupant is the occupant list."""
        assert self.xmpp is not None
        log.info("xmpp: %s: %s; asking for its occupants again", room, why)
        self.xmpp.plugin["xep_0045"].make_join_stanza(
            JID(room), self._our_nick(room), maxstanzas=0).send()

    def _rejoin(self, room: str) -> None:
        if room not in self.joined and self.connected.is_set():
            self._join(room)

    def _on_message(self, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        sender = msg["from"]
        if sender.bare in self.rooms:       # a private message from a room occupant
            self._emit(self._from_occupant(sender.bare, sender.resource, str(msg["body"]),
                                           reply_to=str(sender), said_in=None))
        else:
            self._emit(Incoming(adapter=self.name, identity=sender.bare, text=str(msg["body"]),
                                reply_to=str(sender), room=None, nick=sender.resource or sender.user))

    def _on_groupchat(self, msg: Any) -> None:
        room, nick = msg["from"].bare, msg["mucnick"]
        if not msg["body"] or msg["delay"]["stamp"] or nick == self._our_nick(room):
            return                              # subject changes, history replay, our own echo
        self._emit(self._from_occupant(room, nick, str(msg["body"]), reply_to=room, said_in=room))

    def _our_nick(self, room: str) -> str:
        assert self.xmpp is not None
        try:
            return self.xmpp.plugin["xep_0045"].get_our_jid_in_room(JID(room)).split("/", 1)[1]
        except KeyError:
            return self.nick

    def _from_occupant(self, room: str, nick: str, text: str, reply_to: str,
                       said_in: str | None) -> Incoming:
        """A line from ``room/nick``: from their real bare JID when the room showed it to
        us, else from ``room/nick``, unverified, with what would make it verifiable."""
        real = self.occupants.real_jid(room, nick)
        if real:
            return Incoming(adapter=self.name, identity=real, text=text, reply_to=reply_to,
                            room=said_in, nick=nick)
        return Incoming(adapter=self.name, identity=f"{room}/{nick}", text=text,
                        reply_to=reply_to, room=said_in, nick=nick, verified=False,
                        unverified_reason=(
                            f"{room} does not show {nick}'s real JID to the bot, so anyone could "
                            f"be using that nick; make the room non-anonymous (room configuration: "
                            f"real JIDs visible to anyone) or make the bot a moderator there"))

    # -- sending ---------------------------------------------------------

    def _ready(self, target: str) -> bool:
        jid = JID(target)
        return jid.resource != "" or jid.bare not in self.rooms or jid.bare in self.joined

    def _transmit(self, target: str, text: str) -> None:
        if self.xmpp is None or not self.connected.is_set() or self.xmpp.transport is None:
            raise ConnectionError("not connected")
        jid = JID(target)
        groupchat = jid.bare in self.rooms and not jid.resource
        kind: Literal["groupchat", "chat"] = "groupchat" if groupchat else "chat"
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
