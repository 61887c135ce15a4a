"""Verified IRC identities against a real IRCv3 server with services (InspIRCd + Atheme):
the bot's own SASL login, each speaker's services account as the server vouched for it,
and ACL rules that match that account and not a nick anyone can take."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.app import Jarvis
from bot.irc import IrcAdapter
from clipboard import config as config_mod
from clipboard.errors import ConfigError
from tests.aio import Recorder, run_within
from tests.servers.inspircd import (
    CHANNEL,
    InspIrcd,
    InspIrcdFactory,
    Person,
    client_certificate,
    offers_sasl,
)
from tests.servers.ngircd import Ircd

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


async def started(server: InspIrcd, bot_name: str, **settings: Any) -> tuple[IrcAdapter, Recorder]:
    adapter = IrcAdapter(server.irc_settings(**settings), bot_name)
    recorder = Recorder()
    await adapter.start(recorder)
    try:
        async with asyncio.timeout(10):
            await adapter.connected.wait()
    except BaseException:
        await adapter.stop()
        raise
    return adapter, recorder


async def whois_account(person: Person, nick: str) -> str | None:
    """The account the server says ``nick`` is logged in to (330), or None."""
    person.send(f"WHOIS {nick}")
    account = None
    while True:
        line = await person.until(lambda line: line.command in ("330", "318", "401"))
        if line.command == "330":
            account = line.params[2]
        elif line.command == "318":
            return account


def test_bot_logs_in_with_sasl_plain_and_hears_accounts_from_tags(
        inspircd: InspIrcd, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    bot, bot_pw = inspircd.account("jv")
    alice = inspircd.account("alice")
    monkeypatch.setenv("JARVIS_TEST_SASL", bot_pw)
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        adapter, recorder = await started(inspircd, bot, sasl={
            "mechanism": "plain", "username": bot, "password_env": "JARVIS_TEST_SASL"})
        person = await Person(inspircd, alice[0], account=alice).connect(CHANNEL)
        stranger = await Person(inspircd, unique("stranger")).connect(CHANNEL)
        try:
            assert adapter.ircv3.negotiation is not None
            assert adapter.ircv3.negotiation.account == bot
            assert {"sasl", "account-tag", "extended-join", "account-notify"} <= adapter.ircv3.negotiation.enabled
            assert await whois_account(stranger, bot) == bot          # the server agrees

            person.say(CHANNEL, f"{bot}: status loki")
            heard = await recorder.next()
            assert (heard.nick, heard.account) == (alice[0], alice[0])
            stranger.say(bot, "status loki")
            heard = await recorder.next()
            assert (heard.nick, heard.room, heard.account) == (stranger.nick, None, None)
            person.say(bot, "history loki")                          # private: the tag too
            assert (await recorder.next()).account == alice[0]
        finally:
            await person.close()
            await stranger.close()
            await adapter.stop()
    run_within(scenario)
    payload = base64.b64encode(f"\0{bot}\0{bot_pw}".encode()).decode()
    assert "CAP REQ" in caplog.text                             # the raw exchange was logged ...
    assert bot_pw not in caplog.text and payload not in caplog.text  # ... its secret was not


def test_failed_login_keeps_the_bot_off_the_network_and_is_retried(
        inspircd: InspIrcd, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password: the bot does not go on unauthenticated; it says why and tries
    again at the reconnect delays, and logs in once the password is right."""
    bot, bot_pw = inspircd.account("jv")
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        watcher = await Person(inspircd, unique("watcher")).connect()
        adapter = IrcAdapter(inspircd.irc_settings(
            sasl={"mechanism": "plain", "password": "not-the-password"},
            reconnect_min_delay=0.2, reconnect_max_delay=0.4), bot)
        await adapter.start(Recorder())
        try:
            await asyncio.sleep(2)
            assert not adapter.connected.is_set()
            watcher.send(f"ISON {bot}")
            ison = await watcher.until(lambda line: line.command == "303")
            assert ison.params[-1].strip() == ""                  # never registered, not even briefly
        finally:
            await adapter.stop()
            await watcher.close()
        failures = [r.getMessage() for r in caplog.records
                    if r.name == "bot.irc" and "SASL PLAIN" in r.getMessage()]
        assert len(failures) >= 2, failures                       # retried
        assert f"SASL PLAIN as {bot} failed: 904" in failures[0]
        assert "not going on without the login" in failures[0]
        assert "not-the-password" not in caplog.text

        adapter, _ = await started(inspircd, bot, sasl={"mechanism": "plain", "password": bot_pw})
        try:
            assert adapter.ircv3.negotiation is not None and adapter.ircv3.negotiation.account == bot
        finally:
            await adapter.stop()
    run_within(scenario)


def test_no_services_no_bot_then_services_back_and_the_retry_logs_in(
        inspircd_factory: InspIrcdFactory, caplog: pytest.LogCaptureFixture) -> None:
    """Services split off: the server offers no SASL, so the bot stays off the network,
    and logs in by itself at a retry once services are linked again."""
    server = inspircd_factory()
    bot, bot_pw = server.account("jv")
    server.services.stop()
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        adapter = IrcAdapter(server.irc_settings(sasl={"mechanism": "plain", "password": bot_pw},
                                                 reconnect_min_delay=0.2, reconnect_max_delay=0.5), bot)
        await adapter.start(Recorder())
        try:
            async with asyncio.timeout(15):     # a busy machine takes a while to say it
                while "the server offers no SASL (are its services linked?)" not in caplog.text:
                    await asyncio.sleep(0.05)
            assert not adapter.connected.is_set()
            await asyncio.to_thread(server.services.start, offers_sasl(server.port))
            async with asyncio.timeout(10):
                await adapter.connected.wait()
            assert adapter.ircv3.negotiation is not None and adapter.ircv3.negotiation.account == bot
        finally:
            await adapter.stop()
    run_within(scenario)


def test_sasl_required_but_the_server_has_none(ngircd: Ircd, caplog: pytest.LogCaptureFixture) -> None:
    """ngircd answers CAP but offers no SASL: configured SASL means no connection."""
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        adapter = IrcAdapter(ngircd.irc_settings(sasl={"mechanism": "plain", "password": "pw"}), unique("jv"))
        await adapter.start(Recorder())
        try:
            await asyncio.sleep(1.5)
            assert not adapter.connected.is_set()
        finally:
            await adapter.stop()
    run_within(scenario)
    assert "the server offers no SASL (are its services linked?); CAP LS: multi-prefix" in caplog.text


def test_sasl_external_with_a_client_certificate(inspircd_factory: InspIrcdFactory, tmp_path: Path) -> None:
    """NickServ knows the certificate's fingerprint (CERT ADD); the bot logs in with
    it alone over TLS, no password configured."""
    server = inspircd_factory(tls=True)
    bot, bot_pw = server.account("jv")
    cert, key, fingerprint = client_certificate(tmp_path, "jarvis-client")
    server.add_certificate(bot, bot_pw, fingerprint)

    async def scenario() -> None:
        adapter, _ = await started(server, bot, tls=True, sasl={
            "mechanism": "external", "cert_file": str(cert), "key_file": str(key)})
        watcher = await Person(server, unique("watcher")).connect()
        try:
            assert adapter.ircv3.negotiation is not None and adapter.ircv3.negotiation.account == bot
            assert await whois_account(watcher, bot) == bot
        finally:
            await watcher.close()
            await adapter.stop()
    run_within(scenario)


def test_unknown_certificate_is_refused_not_ignored(inspircd_factory: InspIrcdFactory, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = inspircd_factory(tls=True)
    bot, _ = server.account("jv")
    cert, key, _ = client_certificate(tmp_path, "nobody-knows-me")
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        adapter = IrcAdapter(server.irc_settings(tls=True, sasl={
            "mechanism": "external", "cert_file": str(cert), "key_file": str(key)}), bot)
        await adapter.start(Recorder())
        try:
            await asyncio.sleep(1.5)
            assert not adapter.connected.is_set()
        finally:
            await adapter.stop()
    run_within(scenario)
    assert f"SASL EXTERNAL with the certificate {cert} failed: 904" in caplog.text


def test_accounts_tracked_without_the_tag(inspircd_factory: InspIrcdFactory) -> None:
    """A server that sends no account tag: the bot keeps the table itself, from WHOX for
    those already in the channel, extended-join for newcomers, account-notify for logins
    and logouts, and follows nick changes, parts and quits."""
    server = inspircd_factory(account_tag=False)
    alice, bob = server.account("alice"), server.account("bob")

    async def scenario() -> None:
        early = await Person(server, alice[0], account=alice).connect(CHANNEL)   # before the bot
        adapter, recorder = await started(server, unique("jv"))
        assert adapter.ircv3.negotiation is not None
        assert "account-tag" not in adapter.ircv3.negotiation.enabled and adapter.ircv3.negotiation.whox
        late = await Person(server, bob[0], account=bob).connect(CHANNEL)       # after the bot
        mallory = await Person(server, unique("mallory")).connect(CHANNEL)

        async def account_of(person: Person) -> str | None:
            person.say(CHANNEL, "hello")
            heard = await recorder.next()
            assert heard.nick == person.nick
            return heard.account
        try:
            assert await account_of(early) == alice[0]                 # WHOX at the bot's join
            assert await account_of(late) == bob[0]                   # extended-join
            assert await account_of(mallory) is None

            early.rename(alice[0] + "_away")                          # her account goes with her
            assert await account_of(early) == alice[0]
            mallory.rename(alice[0])                                  # the nick alone is nothing
            assert await account_of(mallory) is None

            await early.logout()                                      # account-notify: ACCOUNT *
            assert await account_of(early) is None

            late.send(f"PART {CHANNEL}")                              # no longer watched: forgotten
            late.say(adapter.nick, "status")
            heard = await recorder.next()
            assert (heard.nick, heard.account) == (bob[0], None)
        finally:
            for person in (early, late, mallory):
                await person.close()
            await adapter.stop()
    run_within(scenario)


def test_bad_sasl_settings_are_one_clear_line() -> None:
    base = {"server": "127.0.0.1"}
    with pytest.raises(ConfigError, match=r"^chat.irc.sasl.mechanism is 'scram'; use plain or external"):
        IrcAdapter({**base, "sasl": {"mechanism": "scram"}}, "jarvis")
    with pytest.raises(ConfigError, match=r"^chat.irc.sasl.password \(or password_env\) is needed"):
        IrcAdapter({**base, "sasl": {"mechanism": "plain"}}, "jarvis")
    with pytest.raises(ConfigError, match=r"^chat.irc.sasl: a client certificate needs chat.irc.tls"):
        IrcAdapter({**base, "sasl": {"mechanism": "external", "cert_file": __file__}}, "jarvis")
    with pytest.raises(ConfigError, match=r"^chat.irc.sasl.cert_file /nonexistent.pem is not a readable"):
        IrcAdapter({**base, "tls": True, "sasl": {"mechanism": "external",
                                                  "cert_file": "/nonexistent.pem"}}, "jarvis")


# -- the whole bot: ACL rules over verified accounts -------------------------------------


def write_config(tmp: Path, irc: dict[str, Any], acl: dict[str, Any]) -> Path:
    data = {"chat": {"console": {"enabled": False}, "irc": irc},
            "store": {"path": str(tmp / "jarvis.db")},
            "acl": acl}
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    config_mod.load(path, export=False)  # the configuration is valid as written
    return path


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Jarvis]:
    async with Jarvis(config_mod.load(path), role="jarvis test", drive=True, adopt=True) as jarvis:
        async with asyncio.timeout(15):
            await jarvis.adapter("irc").connected.wait()                # type: ignore[attr-defined]
        yield jarvis


def bot_login(server: InspIrcd) -> dict[str, Any]:
    """A services account for the bot and the settings that log it in."""
    name, password = server.account("jv")
    return server.irc_settings(nick=name, sasl={"mechanism": "plain", "password": password})


def test_account_rule_opens_lock_to_alice_and_not_to_her_nick(inspircd: InspIrcd, tmp_path: Path) -> None:
    alice = inspircd.account("alice")
    irc = bot_login(inspircd)
    bot = irc["nick"]
    path = write_config(tmp_path, irc, {"lock": {"allow": [f"account:{alice[0]}"]},
                                        "unlock": {"allow": [f"account:{alice[0]}"]}})

    async def scenario() -> None:
        async with running(path) as jarvis:
            person = await Person(inspircd, alice[0], account=alice).connect(CHANNEL)
            impostor = await Person(inspircd, unique("imp")).connect(CHANNEL)
            try:
                person.say(CHANNEL, f"{bot}: lock loki disk swap")
                said = await person.expect("loki")
                assert said.params[-1].startswith(f"{alice[0]}: loki: locked"), said
                await person.close()
                await asyncio.sleep(0.2)
                user = impostor.nick
                impostor.rename(alice[0])                              # her nick, free now
                impostor.say(CHANNEL, f"{bot}: unlock loki")
                denied = await impostor.expect("denied")
                assert denied.params[-1] == (
                    f"{alice[0]}: unlock denied for {alice[0]}!{user}@127.0.0.1: "
                    f"rule acl.unlock allows only ['account:{alice[0]}']")
                assert await jarvis.store.lock_of("loki") is not None      # still held
            finally:
                await person.close()
                await impostor.close()
    run_within(scenario, timeout=90)


def test_logout_seen_through_account_notify_closes_the_rule(inspircd_factory: InspIrcdFactory,
                                                            tmp_path: Path) -> None:
    """No account tag on this server: alice was in the channel before the bot (WHOX tells
    it her account); once she logs out (ACCOUNT *) the same connection is denied."""
    server = inspircd_factory(account_tag=False)
    alice = server.account("alice")
    irc = bot_login(server)
    bot = irc["nick"]
    rule = [f"account:{alice[0]}"]
    path = write_config(tmp_path, irc, {"lock": {"allow": rule}, "unlock": {"allow": rule}})

    async def scenario() -> None:
        person = await Person(server, alice[0], account=alice).connect(CHANNEL)
        try:
            async with running(path) as jarvis:
                person.say(CHANNEL, f"{bot}: lock odin")
                assert (await person.expect("odin")).params[-1].startswith(f"{alice[0]}: odin: locked")
                await person.logout()
                person.say(CHANNEL, f"{bot}: unlock odin")
                denied = await person.expect("denied")
                assert denied.params[-1] == (
                    f"{alice[0]}: unlock denied for {alice[0]}!{alice[0]}@127.0.0.1: "
                    f"rule acl.unlock allows only {rule}")
                assert await jarvis.store.lock_of("odin") is not None
        finally:
            await person.close()
    run_within(scenario, timeout=90)


def test_nicks_with_brackets_are_literal_through_a_real_server(inspircd: InspIrcd, tmp_path: Path) -> None:
    """``[ops]bob`` is that nick, not "o, p or s, then bob": fnmatch let ``obob`` in."""
    suffix = next(_names)
    bracketed, backslashed = f"[ops]bob{suffix}", f"z\\^{{x}}|{suffix}"
    irc = inspircd.irc_settings(nick=unique("jv"))
    bot = irc["nick"]
    path = write_config(tmp_path, irc, {"lock": {"allow": [f"{bracketed}!*@*", f"{backslashed}!*@*"]}})

    async def scenario() -> None:
        async with running(path):
            people = [await Person(inspircd, nick).connect(CHANNEL)
                      for nick in (f"obob{suffix}", bracketed, backslashed)]
            try:
                for person in people:
                    person.say(CHANNEL, f"{bot}: lock host{suffix}")
                    said = await person.expect(f"{person.nick}: ")
                    allowed = person.nick in (bracketed, backslashed)
                    assert ("denied" not in said.params[-1]) is allowed, (person.nick, said)
            finally:
                for person in people:
                    await person.close()
    run_within(scenario, timeout=90)
