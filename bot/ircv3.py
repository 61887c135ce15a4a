"""IRCv3 for the IRC adapter: capability negotiation, the bot's own SASL login, and
which services account each speaker is logged in to.

Why it exists: on IRC only the host of ``nick!user@host`` is set by the server; a
nick is whatever a client asks for. What the server does vouch for is the services
account a client logged in to, and it says so only through IRCv3: the ``account``
message tag (``account-tag``), the account on a JOIN (``extended-join``), login and
logout of people in our channels (``account-notify``, ``ACCOUNT *`` = logged out) and
WHOX's ``a`` field for those already in a channel when we join. ``irc.client_aio``
asks for none of these and has no SASL, so ``Negotiation`` does the CAP/AUTHENTICATE
exchange (https://ircv3.net/specs/extensions/capability-negotiation,
https://ircv3.net/specs/extensions/sasl-3.1) and ``Accounts`` keeps the per-nick
account table that stands in for the tag when a server does not send it.
"""
from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import irc.strings

from bot.outbox import setting_secret
from clipboard.errors import ConfigError

log = logging.getLogger(__name__)

WANTED_CAPS = ("sasl", "account-tag", "extended-join", "account-notify")
MECHANISMS = ("PLAIN", "EXTERNAL")
# The WHOX fields t, c, u, h, n, f, a: servers answer in that fixed order.
WHOX_FIELDS = "%tcuhnfa"
WHOX_TOKEN = "157"
_CHUNK = 400  # AUTHENTICATE payloads go in pieces of 400 bytes (SASL 3.1)


@dataclass(frozen=True)
class SaslSettings:
    """``chat.irc.sasl``: how the bot itself logs in to services, if at all."""

    mechanism: str | None = None  # "PLAIN", "EXTERNAL" or None (no SASL)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_settings(cls, irc_settings: dict[str, Any], nick: str, where: str) -> SaslSettings:
        """Checked once at start, so a half-configured login is a clear error, not a silent
        connection without one."""
        raw = irc_settings.get("sasl") or {}
        where = f"{where}.sasl"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping")
        mechanism = str(raw.get("mechanism") or "").upper() or None
        if mechanism is not None and mechanism not in MECHANISMS:
            raise ConfigError(f"{where}.mechanism is {raw.get('mechanism')!r}; use plain or external "
                              "(or null for no SASL)")
        cert_file = str(raw["cert_file"]) if raw.get("cert_file") else None
        key_file = str(raw["key_file"]) if raw.get("key_file") else None
        for key, path in (("cert_file", cert_file), ("key_file", key_file)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{where}.{key} {path} is not a readable file")
        password = setting_secret(raw, "password", where)
        username = str(raw.get("username") or nick)
        if mechanism == "PLAIN" and not password:
            raise ConfigError(f"{where}.password (or password_env) is needed for SASL PLAIN")
        if mechanism == "EXTERNAL" or cert_file:
            if not irc_settings.get("tls"):
                raise ConfigError(f"{where}: a client certificate needs chat.irc.tls: true")
            if cert_file is None:
                raise ConfigError(f"{where}.cert_file is needed for SASL EXTERNAL")
        return cls(mechanism, username, password, cert_file, key_file)


class Negotiation:
    """One connection's CAP exchange and, when configured, the bot's SASL login.

    ``CAP LS 302`` goes out before NICK/USER, so the server holds registration until
    ``CAP END``; that is sent only after SASL succeeded. When it fails, ``failure``
    says why and ``on_failure`` is called: the adapter drops the connection, so the
    bot never sits on the network unauthenticated because its login went wrong.
    """

    START = "CAP LS 302"

    def __init__(self, sasl: SaslSettings, send: Callable[[str], None],
                 on_failure: Callable[[str], None]) -> None:
        self.sasl = sasl
        self._send = send
        self._on_failure = on_failure
        self.offered: dict[str, str] = {}
        self.enabled: set[str] = set()
        self.whox = False
        self.account: str | None = None  # the bot's own account, from 900
        self.authenticated = False
        self.failure: str | None = None
        self._listing = True
        self._ended = False

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            self._on_failure(reason)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._send("CAP END")

    def on_cap(self, arguments: list[str]) -> None:
        """``CAP <target> LS|ACK|NAK|NEW|DEL [*] :<caps>`` (``arguments`` after the target)."""
        if not arguments:
            return
        sub, caps = arguments[0].upper(), arguments[-1].split() if len(arguments) > 1 else []
        if sub == "LS" and self._listing:
            for cap in caps:
                name, _, value = cap.partition("=")
                self.offered[name] = value
            if len(arguments) > 2 and arguments[1] == "*":
                return  # more LS lines follow
            self._listing = False
            self._request()
        elif sub == "ACK":
            self.enabled.update(cap.lstrip("-~=") for cap in caps if not cap.startswith("-"))
            self.enabled.difference_update(cap[1:] for cap in caps if cap.startswith("-"))
            if self.failure is None and not self._ended:
                self._after_ack()
        elif sub == "NAK":
            if self.sasl.mechanism and "sasl" in caps:
                self._fail(f"the server refused the capabilities {' '.join(caps)}")
            else:
                self._end()
        elif sub == "DEL":
            self.enabled.difference_update(caps)
            log.info("irc: the server withdrew %s", " ".join(caps))
        elif sub == "NEW":
            wanted = [c.partition("=")[0] for c in caps if c.partition("=")[0] in WANTED_CAPS[1:]]
            if wanted:
                self._send("CAP REQ :" + " ".join(wanted))

    def _request(self) -> None:
        want = [cap for cap in WANTED_CAPS if cap in self.offered]
        if not self.sasl.mechanism:
            want = [cap for cap in want if cap != "sasl"]
        elif "sasl" not in self.offered:
            self._fail("the server offers no SASL (are its services linked?); CAP LS: "
                       + (" ".join(sorted(self.offered)) or "nothing"))
            return
        else:
            mechanisms = self.offered["sasl"].upper().split(",") if self.offered["sasl"] else []
            if mechanisms and self.sasl.mechanism not in mechanisms:
                self._fail(f"the server offers SASL {', '.join(mechanisms)}, not {self.sasl.mechanism}")
                return
        if want:
            self._send("CAP REQ :" + " ".join(want))
        else:
            self._end()

    def _after_ack(self) -> None:
        if self.sasl.mechanism and "sasl" in self.enabled:
            self._send(f"AUTHENTICATE {self.sasl.mechanism}")
        elif self.sasl.mechanism:
            self._fail("the server did not enable the sasl capability")
        else:
            self._end()

    def on_authenticate(self, argument: str) -> None:
        """The server's ``AUTHENTICATE +``: PLAIN and EXTERNAL need no challenge, only a go-ahead."""
        if not self.sasl.mechanism:
            return
        if argument != "+" or self.failure is not None:
            self._fail(f"unexpected AUTHENTICATE challenge for {self.sasl.mechanism}")
            return
        if self.sasl.mechanism == "PLAIN":
            assert self.sasl.password is not None, "checked by SaslSettings"
            raw = f"\0{self.sasl.username}\0{self.sasl.password}".encode()
        else:
            raw = b""  # EXTERNAL: the account is the one the certificate is registered to
        payload = base64.b64encode(raw).decode()
        for start in range(0, len(payload), _CHUNK):
            self._send("AUTHENTICATE " + payload[start:start + _CHUNK])
        if len(payload) % _CHUNK == 0:
            self._send("AUTHENTICATE +")

    def on_logged_in(self, account: str) -> None:
        self.account = account

    def on_sasl_done(self, code: str, text: str) -> None:
        """903 (success) or 902/904-907 from the server."""
        if not self.sasl.mechanism:
            return
        if code == "903" or code == "907":
            self.authenticated = True
            self._end()
        elif self.sasl.mechanism == "PLAIN":
            self._fail(f"SASL PLAIN as {self.sasl.username} failed: {code} {text}")
        else:
            self._fail(f"SASL EXTERNAL with the certificate {self.sasl.cert_file} failed: {code} {text}")

    def on_unknown_command(self, command: str) -> None:
        """A server without CAP at all: it registers us after NICK/USER (421 for CAP)."""
        if command.upper() == "CAP":
            self._listing = False
            if self.sasl.mechanism:
                self._fail("the server does not support CAP, so no SASL")

    def on_isupport(self, tokens: list[str]) -> None:
        if any(token.upper() == "WHOX" or token.upper().startswith("WHOX=") for token in tokens):
            self.whox = True

    def on_welcome(self) -> None:
        """Registered: with SASL configured that must not happen before the login succeeded."""
        if self.sasl.mechanism and not self.authenticated:
            self._fail(f"the server registered the bot before SASL {self.sasl.mechanism} succeeded")

    @property
    def tracks_accounts(self) -> bool:
        """Whether the per-nick table stays current: logins, logouts and joiners are announced."""
        return {"extended-join", "account-notify"} <= self.enabled


@dataclass
class _Member:
    account: str | None
    channels: set[str]


class Accounts:
    """Which nick is logged in to which account, for the people in our channels.

    Entries come only from what the server said (extended-join, WHOX, ACCOUNT), and
    exist only while the nick shares a channel with the bot: that is as long as
    account-notify keeps the server telling us of changes. A nick change moves the
    entry; a part, kick or quit drops it, so a newcomer under an old nick starts unknown.
    """

    def __init__(self) -> None:
        self._members: dict[str, _Member] = {}

    @staticmethod
    def _key(nick: str) -> str:
        folded: str = irc.strings.lower(nick)
        return folded

    def clear(self) -> None:
        self._members.clear()

    def account(self, nick: str) -> str | None:
        member = self._members.get(self._key(nick))
        return member.account if member is not None else None

    def seen(self, nick: str, channel: str, account: str | None) -> None:
        """``nick`` is in ``channel`` logged in to ``account`` (None: to none)."""
        member = self._members.setdefault(self._key(nick), _Member(None, set()))
        member.account = account
        member.channels.add(self._key(channel))

    def logged(self, nick: str, account: str | None) -> None:
        member = self._members.get(self._key(nick))
        if member is not None:
            member.account = account

    def renamed(self, old: str, new: str) -> None:
        member = self._members.pop(self._key(old), None)
        if member is not None:
            self._members[self._key(new)] = member

    def parted(self, nick: str, channel: str) -> None:
        member = self._members.get(self._key(nick))
        if member is not None:
            member.channels.discard(self._key(channel))
            if not member.channels:
                del self._members[self._key(nick)]

    def quit(self, nick: str) -> None:
        self._members.pop(self._key(nick), None)

    def left(self, channel: str) -> None:
        """The bot left ``channel``: what we knew from it is no longer kept current."""
        for nick in list(self._members):
            self.parted(nick, channel)


def account_value(value: str | None) -> str | None:
    """The account in extended-join, ACCOUNT or WHOX; ``*`` and ``0`` mean none."""
    if value in (None, "", "*", "0"):
        return None
    return value


def tag(tags: list[dict[str, str | None]] | None, key: str) -> str | None:
    for item in tags or []:
        if item.get("key") == key:
            return item.get("value")
    return None
