"""The XMPP adapter against a real prosody, with real slixmpp clients as the people."""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from bot.xmpp import XmppAdapter
from clipboard.errors import ConfigError
from tests.aio import Recorder, assert_never_connects, run_within
from tests.servers.prosody import MUC, ROOM, Prosody, ProsodyFactory, XmppClient

_names = itertools.count()


def accounts(server: Prosody, *users: str) -> list[str]:
    return [server.register(f"{user}{next(_names)}", "pw-" + user) for user in users]


async def started(server: Prosody, jid: str, **settings: Any) -> tuple[XmppAdapter, Recorder]:
    adapter = XmppAdapter(server.xmpp_settings(jid, "pw-jarvis", **settings), "jarvis")
    recorder = Recorder()
    await adapter.start(recorder)
    async with asyncio.timeout(10):
        await adapter.connected.wait()
        while not all(room in adapter.joined for room in adapter.rooms):
            await asyncio.sleep(0.02)
    return adapter, recorder


def test_direct_chat(prosody: Prosody) -> None:
    bot_jid, alice_jid = accounts(prosody, "jarvis", "alice")

    async def scenario() -> None:
        adapter, recorder = await started(prosody, bot_jid, rooms=[])
        alice = await XmppClient(prosody, alice_jid, "pw-alice").connect()
        try:
            alice.chat(bot_jid, "status loki")
            heard = await recorder.next()
            assert (heard.adapter, heard.identity, heard.room, heard.text) == (
                "xmpp", alice_jid, None, "status loki")
            assert heard.reply_to == f"{alice_jid}/test"
            adapter.send(heard.reply_to, "loki is UP")
            got = await alice.expect("loki is UP")
            assert got.kind == "chat" and got.sender.startswith(bot_jid + "/")
        finally:
            await alice.close()
            await adapter.stop()
    run_within(scenario)


def test_room_with_real_jid_and_long_answer(prosody: Prosody) -> None:
    bot_jid, bob_jid = accounts(prosody, "jarvis", "bob")
    room = f"ops{next(_names)}@{MUC}"

    async def scenario() -> None:
        adapter, recorder = await started(prosody, bot_jid, rooms=[room], max_bytes=1000)
        bob = await XmppClient(prosody, bob_jid, "pw-bob").connect()
        await bob.join(room, "bob")
        try:
            bob.groupchat(room, "jarvis: status loki")
            heard = await recorder.next()
            assert (heard.room, heard.reply_to, heard.nick, heard.text) == (
                room, room, "bob", "jarvis: status loki")
            # the bot created the room, so as its owner it sees real JIDs
            assert (heard.identity, heard.verified) == (bob_jid, True)
            lines = [f"step {i}: ok — ✓" for i in range(200)]
            adapter.send(room, "\n".join(lines))
            got: list[str] = []
            async with asyncio.timeout(10):
                while len(got) < len(lines):
                    message = await bob.expect(lambda h: h.sender == f"{room}/jarvis")
                    assert len(message.text.encode()) <= 1000
                    got.extend(message.text.split("\n"))
            assert got == lines
        finally:
            await bob.close()
            await adapter.stop()
    run_within(scenario)


def test_occupant_identity_falls_back_to_room_nick_when_jids_hidden(prosody: Prosody) -> None:
    bot_jid, carol_jid = accounts(prosody, "jarvis", "carol")
    room = f"anon{next(_names)}@{MUC}"

    async def scenario() -> None:
        carol = await XmppClient(prosody, carol_jid, "pw-carol").connect()
        await carol.join(room, "carol")          # carol creates (and owns) the room first
        adapter, recorder = await started(prosody, bot_jid, rooms=[room])
        try:
            carol.groupchat(room, "jarvis: help")
            heard = await recorder.next()
            assert (heard.identity, heard.verified) == (f"{room}/carol", False)
            assert "make the room non-anonymous" in (heard.unverified_reason or "")
        finally:
            await carol.close()
            await adapter.stop()
    run_within(scenario)


def test_bad_settings_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"chat.xmpp.jid must be an account"):
        XmppAdapter({"jid": "nodomain"}, "jarvis")
    with pytest.raises(ConfigError, match=r"chat.xmpp.password is not set"):
        XmppAdapter({"jid": "j@localhost"}, "jarvis")
    monkeypatch.delenv("JARVIS_T_XMPP", raising=False)
    with pytest.raises(ConfigError, match=r"chat.xmpp.password_env names the environment variable JARVIS_T_XMPP"):
        XmppAdapter({"jid": "j@localhost", "password_env": "JARVIS_T_XMPP"}, "jarvis")


def test_reconnects_after_server_crash_and_delivers_what_waited(prosody_factory: ProsodyFactory) -> None:
    server = prosody_factory()
    bot_jid, bob_jid = accounts(server, "jarvis", "bob")

    async def scenario() -> None:
        adapter, recorder = await started(server, bot_jid, reconnect_min_delay=1.0,
                                          reconnect_max_delay=2.0)
        try:
            server.kill()
            async with asyncio.timeout(5):
                while adapter.connected.is_set():
                    await asyncio.sleep(0.02)
            adapter.send(ROOM, "loki: deployment 7 finished")
            adapter.send(ROOM, "loki: all 12 steps ok")
            await asyncio.sleep(1.5)
            server.start()
            restarted = time.monotonic()
            bob = await XmppClient(server, bob_jid, "pw-bob").connect()
            await bob.join(ROOM, "bob")
            first = await bob.expect("deployment 7", timeout=30)
            second = await bob.expect("all 12 steps", timeout=5)
            assert first.kind == second.kind == "groupchat"
            assert time.monotonic() - restarted < 30
            assert adapter.reconnects >= 1
            bob.groupchat(ROOM, "jarvis: status loki")
            assert (await recorder.next()).text == "jarvis: status loki"
            await bob.close()
        finally:
            await adapter.stop()
    run_within(scenario, timeout=90)


def test_starttls_with_the_server_certificate_verified(prosody_factory: ProsodyFactory) -> None:
    """A server that requires encryption: the bot upgrades with STARTTLS and checks the
    certificate against ``ca_file``; without that CA it refuses the server outright."""
    server = prosody_factory(tls=True)
    bot_jid, alice_jid = accounts(server, "jarvis", "alice")

    async def scenario() -> None:
        adapter, recorder = await started(server, bot_jid, rooms=[])
        alice = await XmppClient(server, alice_jid, "pw-alice").connect()
        try:
            assert adapter.xmpp is not None and adapter.xmpp.transport is not None
            assert adapter.xmpp.transport.get_extra_info("ssl_object") is not None
            alice.chat(bot_jid, "status loki")
            heard = await recorder.next()
            adapter.send(heard.reply_to, "loki is UP")
            await alice.expect("loki is UP")
        finally:
            await alice.close()
            await adapter.stop()
        await assert_never_connects(XmppAdapter(server.xmpp_settings(
            bot_jid, "pw-jarvis", rooms=[], ca_file=None, connect_timeout=2), "jarvis"))
    run_within(scenario)
