"""The IRC adapter's IRCv3 events: the reactor's CAP, SASL, ACCOUNT, WHOX, JOIN, PART,
KICK, QUIT and NICK lines fed to ``bot.ircv3``'s ``Negotiation`` and ``Accounts``.

Why a module of its own: ``bot.ircv3`` knows the protocol but not the ``irc``
library; ``bot.irc`` keeps the connection, the channels and the lines said. What
sits between (which library event means what for the login and for who is logged
in as what, and which account a message's speaker has) is this one job. Its
handlers sit on the adapter's reactor beside the adapter's own; the library calls
every handler of an event, so neither side needs to know the other's.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import irc.client
import irc.client_aio

from bot.ircv3 import (
    WHOX_FIELDS,
    WHOX_TOKEN,
    Accounts,
    Negotiation,
    SaslSettings,
    account_value,
    tag,
)


class Ircv3Events:
    """One adapter's capabilities, login and account table, kept current from its events.

    ``owns`` says whether a connection is the adapter's current one (the reactor
    fires for every connection it has had); ``joined`` is the adapter's live set of
    joined channels (lowercased), read when a capability change calls for a WHOX.
    """

    def __init__(self, sasl: SaslSettings, owns: Callable[[Any], bool], joined: set[str]) -> None:
        self.sasl = sasl
        self.accounts = Accounts()
        self.negotiation: Negotiation | None = None  # this connection's capabilities and login
        self._owns = owns
        self._joined = joined

    def install(self, reactor: irc.client_aio.AioReactor) -> None:
        for event, handler in [("cap", self._on_cap), ("authenticate", self._on_authenticate),
                               ("loggedin", self._on_logged_in), ("saslsuccess", self._on_sasl_done),
                               ("saslfail", self._on_sasl_done), ("sasltoolong", self._on_sasl_done),
                               ("saslaborted", self._on_sasl_done),
                               ("saslalready", self._on_sasl_done),
                               ("nicklocked", self._on_sasl_done),
                               ("unknowncommand", self._on_unknown_command),
                               ("featurelist", self._on_isupport), ("account", self._on_account),
                               ("whospcrpl", self._on_whox), ("join", self._on_join),
                               ("part", self._on_part), ("kick", self._on_kick),
                               ("quit", self._on_quit), ("nick", self._on_nick),
                               ("disconnect", self._on_disconnect)]:
            reactor.add_global_handler(event, handler)

    def begin(self, send: Callable[[str], None], failed: Callable[[str], None]) -> Negotiation:
        """A new connection attempt: a fresh negotiation, and nobody's account known yet."""
        self.accounts.clear()
        self.negotiation = Negotiation(self.sasl, send, failed)
        return self.negotiation

    def account(self, event: irc.client.Event) -> str | None:
        """The speaker's services account, only as the server vouched for it: the message's
        ``account`` tag when the server sends the tag (no tag = not logged in), else the
        table account-notify keeps current, else nothing."""
        negotiation = self.negotiation
        if negotiation is None:
            return None
        if "account-tag" in negotiation.enabled:
            return account_value(tag(event.tags, "account"))
        if negotiation.tracks_accounts:
            return self.accounts.account(event.source.nick)
        return None

    # -- capabilities and the bot's own login -------------------------------

    def _on_cap(self, connection: Any, event: irc.client.Event) -> None:
        """Also CAP NEW/DEL later on: a table kept while account-notify was off may be stale,
        so it starts over, refilled by WHOX where the bot already sits."""
        negotiation = self.negotiation
        if not self._owns(connection) or negotiation is None:
            return
        tracked = negotiation.tracks_accounts
        negotiation.on_cap(list(event.arguments))
        if negotiation.tracks_accounts != tracked:
            self.accounts.clear()
            if negotiation.tracks_accounts and negotiation.whox:
                for channel in self._joined:
                    connection.send_raw(f"WHO {channel} {WHOX_FIELDS},{WHOX_TOKEN}")

    def _on_authenticate(self, connection: Any, event: irc.client.Event) -> None:
        if self._owns(connection) and self.negotiation is not None:
            self.negotiation.on_authenticate(str(event.target))

    def _on_logged_in(self, connection: Any, event: irc.client.Event) -> None:
        if self._owns(connection) and self.negotiation is not None and len(event.arguments) >= 2:
            self.negotiation.on_logged_in(event.arguments[1])

    def _on_sasl_done(self, connection: Any, event: irc.client.Event) -> None:
        if self._owns(connection) and self.negotiation is not None:
            code = getattr(event.type, "code", "") or str(event.type)
            self.negotiation.on_sasl_done(code, event.arguments[-1] if event.arguments else "")

    def _on_unknown_command(self, connection: Any, event: irc.client.Event) -> None:
        if self._owns(connection) and self.negotiation is not None and event.arguments:
            self.negotiation.on_unknown_command(event.arguments[0])

    def _on_isupport(self, connection: Any, event: irc.client.Event) -> None:
        if self._owns(connection) and self.negotiation is not None:
            self.negotiation.on_isupport(list(event.arguments))

    # -- who is logged in as what -------------------------------------------

    def _on_join(self, connection: Any, event: irc.client.Event) -> None:
        if not self._owns(connection):
            return
        channel = str(event.target)
        negotiation = self.negotiation
        if event.source.nick == connection.get_nickname():
            if negotiation is not None and negotiation.whox and negotiation.tracks_accounts:
                connection.send_raw(f"WHO {channel} {WHOX_FIELDS},{WHOX_TOKEN}")  # who was here first
        elif negotiation is not None and "extended-join" in negotiation.enabled:
            self.accounts.seen(event.source.nick, channel,
                               account_value(event.arguments[0] if event.arguments else None))
        else:
            self.accounts.seen(event.source.nick, channel, None)

    def _on_account(self, connection: Any, event: irc.client.Event) -> None:
        """account-notify: ``ACCOUNT <name>`` on login, ``ACCOUNT *`` on logout."""
        if self._owns(connection):
            self.accounts.logged(event.source.nick, account_value(str(event.target)))

    def _on_whox(self, connection: Any, event: irc.client.Event) -> None:
        """``354 <me> <token> <channel> <user> <host> <nick> <flags> <account>``."""
        args = event.arguments
        if self._owns(connection) and len(args) >= 7 and args[0] == WHOX_TOKEN \
                and args[4] != connection.get_nickname():
            self.accounts.seen(args[4], args[1], account_value(args[6]))

    def _on_part(self, connection: Any, event: irc.client.Event) -> None:
        if not self._owns(connection):
            return
        if event.source.nick == connection.get_nickname():
            self.accounts.left(str(event.target))
        else:
            self.accounts.parted(event.source.nick, str(event.target))

    def _on_kick(self, connection: Any, event: irc.client.Event) -> None:
        if not self._owns(connection):
            return
        channel = str(event.target)
        if event.arguments[0] != connection.get_nickname():
            self.accounts.parted(event.arguments[0], channel)
        else:
            self.accounts.left(channel)

    def _on_quit(self, connection: Any, event: irc.client.Event) -> None:
        if self._owns(connection):
            self.accounts.quit(event.source.nick)

    def _on_nick(self, connection: Any, event: irc.client.Event) -> None:
        if self._owns(connection):
            self.accounts.renamed(event.source.nick, str(event.target))

    def _on_disconnect(self, connection: Any, event: irc.client.Event) -> None:
        if self._owns(connection):
            self.accounts.clear()
