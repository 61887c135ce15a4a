"""Who speaks in a Jabber room, against a real prosody: the real JID when the room
shows it to the bot, else an unverified ``room/nick`` that gets no privileged command.

Rooms are made the way people make them: the first joiner owns the room, and its
anonymity is set with the room configuration form (``whois``), with prosody's
``muc_room_default_public_jids``, or by making the bot a moderator."""
from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from bot.xmpp import XmppAdapter
from tests.aio import Recorder, run_within
from tests.servers.prosody import MUC, Prosody, ProsodyFactory, XmppClient
from tests.test_chat import running, write_config, xmpp_account

_rooms = itertools.count()


def fresh_room(kind: str) -> str:
    return f"{kind}{next(_rooms)}@{MUC}"


async def person(server: Prosody, account: tuple[str, str], room: str, nick: str) -> XmppClient:
    client = await XmppClient(server, *account).connect()
    await client.join(room, nick)
    return client


def bot_config(tmp: Path, server: Prosody, bot: tuple[str, str], room: str,
               acl: dict[str, Any]) -> Path:
    return write_config(tmp, {"xmpp": server.xmpp_settings(*bot, rooms=[room])}, acl=acl)


def hidden(room: str, nick: str) -> str:
    return (f"{room} does not show {nick}'s real JID to the bot, so anyone could be using that "
            f"nick; make the room non-anonymous (room configuration: real JIDs visible to anyone) "
            f"or make the bot a moderator there")


async def ask(client: XmppClient, room: str, text: str, nick: str) -> str:
    """Say ``text`` to the bot in ``room``; its answer, without the ``nick: `` prefix."""
    client.groupchat(room, f"jarvis: {text}")
    heard = await client.expect(lambda h: h.sender == f"{room}/jarvis" and h.text.startswith(nick + ":"))
    return heard.text[len(nick) + 2:]


async def ask_privately(client: XmppClient, room: str, text: str) -> str:
    """Say ``text`` to the bot by a private message through ``room``."""
    client.chat(f"{room}/jarvis", text)
    return (await client.expect(lambda h: h.kind == "chat" and h.sender == f"{room}/jarvis")).text


async def once_verified(client: XmppClient, room: str, text: str, nick: str) -> str:
    """Ask until the answer is not a refusal for want of a real JID: the bot learns the
    JIDs from presences it asks for again, which may reach it after ``text`` does."""
    async with asyncio.timeout(10):
        while (answer := await ask(client, room, text, nick)).startswith(f"{text.split()[0]} refused"):
            await asyncio.sleep(0.1)
    return answer


def test_semi_anonymous_room_refuses_privileged_commands_and_answers_read_only(
        prosody: Prosody, tmp_path: Path) -> None:
    """carol owns a room that hides real JIDs from participants, the bot among them:
    even a rule naming ``room/carol`` does not let her deploy or lock (anyone can take
    that nick), but it still lets her ask for status. Once she makes the bot a
    moderator, prosody shows it the real JIDs and she is carol@ again."""
    bot, carol = xmpp_account(prosody, "jarvis"), xmpp_account(prosody, "carol")
    room = fresh_room("semi")
    as_nick = f"{room}/carol"
    path = bot_config(tmp_path, prosody, bot, room, acl={
        "deploy": {"allow": [as_nick, carol[0]]}, "lock": {"allow": [as_nick, carol[0]]},
        "status": {"allow": [as_nick]}})

    async def scenario() -> None:
        owner = await person(prosody, carol, room, "carol")    # created before the bot came
        try:
            async with running(path):
                assert await ask(owner, room, "deploy loki.yaml", "carol") == (
                    f"deploy refused for {as_nick}: {hidden(room, 'carol')}")
                assert await ask(owner, room, "lock loki", "carol") == (
                    f"lock refused for {as_nick}: {hidden(room, 'carol')}")
                assert await ask(owner, room, "status loki", "carol") == "loki: never deployed"
                assert await ask_privately(owner, room, "lock loki") == (
                    f"lock refused for {as_nick}: {hidden(room, 'carol')}")

                await owner.set_role(room, "jarvis", "moderator")
                assert (await once_verified(owner, room, "lock loki", "carol")).startswith("loki: locked")
        finally:
            await owner.close()
    run_within(scenario, timeout=60)


def test_non_anonymous_room_real_jids_allow_and_deny_in_room_and_privately(
        prosody: Prosody, tmp_path: Path) -> None:
    """bob owns the room, makes it non-anonymous and is there before the bot joins: the
    bot knows him by JID from the presences it gets on joining. mallory, denied by JID,
    is denied in the room and through the room privately, under any nick."""
    bot = xmpp_account(prosody, "jarvis")
    bob, mallory = xmpp_account(prosody, "bob"), xmpp_account(prosody, "mallory")
    room = fresh_room("open")
    path = bot_config(tmp_path, prosody, bot, room, acl={
        "lock": {"allow": ["xmpp:*"], "deny": [mallory[0]]},
        "unlock": {"allow": [bob[0]]}})

    async def scenario() -> None:
        owner = await person(prosody, bob, room, "bob")
        await owner.configure(room, whois="anyone")
        intruder = await person(prosody, mallory, room, "alice")
        try:
            async with running(path):
                assert (await ask(owner, room, "lock loki", "bob")).startswith("loki: locked")
                assert (await ask_privately(owner, room, "unlock loki")).startswith("loki: unlocked")

                denied = f"lock denied for {mallory[0]}: rule acl.lock.deny matches {mallory[0]!r}"
                assert await ask(intruder, room, "lock thor", "alice") == denied
                assert await ask_privately(intruder, room, "lock thor") == denied
                intruder.change_nick(room, "bob2")
                assert await ask(intruder, room, "lock thor", "bob2") == denied
                assert await ask(intruder, room, "unlock loki", "bob2") == (
                    f"unlock denied for {mallory[0]}: rule acl.unlock allows only [{bob[0]!r}]")
        finally:
            await intruder.close()
            await owner.close()
    run_within(scenario, timeout=60)


def test_room_made_non_anonymous_while_the_bot_is_in_it(prosody: Prosody, tmp_path: Path) -> None:
    """Doing what the refusal says works without restarting the bot: prosody announces
    the change (status 172) but resends no presence; the bot asks for them again."""
    bot, carol = xmpp_account(prosody, "jarvis"), xmpp_account(prosody, "carol")
    room = fresh_room("later")
    path = bot_config(tmp_path, prosody, bot, room, acl={"lock": {"allow": [carol[0]]}})

    async def scenario() -> None:
        owner = await person(prosody, carol, room, "carol")
        try:
            async with running(path):
                assert (await ask(owner, room, "lock loki", "carol")).startswith("lock refused")
                await owner.configure(room, whois="anyone")
                assert (await once_verified(owner, room, "lock loki", "carol")).startswith("loki: locked")
        finally:
            await owner.close()
    run_within(scenario, timeout=60)


def test_server_wide_public_jids(prosody_factory: ProsodyFactory) -> None:
    """``muc_room_default_public_jids = true``: every new room shows real JIDs, so a room
    someone else created before the bot joined needs no configuring."""
    server = prosody_factory(public_jids=True)
    bot, carol = xmpp_account(server, "jarvis"), xmpp_account(server, "carol")
    room = fresh_room("public")

    async def scenario() -> None:
        owner = await person(server, carol, room, "carol")
        adapter = XmppAdapter(server.xmpp_settings(*bot, rooms=[room]), "jarvis")
        recorder = Recorder()
        await adapter.start(recorder)
        try:
            async with asyncio.timeout(10):
                while room not in adapter.joined:
                    await asyncio.sleep(0.02)
            owner.groupchat(room, "jarvis: status")
            heard = await recorder.next()
            assert (heard.identity, heard.verified, heard.unverified_reason) == (carol[0], True, None)
        finally:
            await owner.close()
            await adapter.stop()
    run_within(scenario)


def test_nick_changes_and_leaves_are_followed(prosody: Prosody) -> None:
    """The room shows real JIDs when the bot joins, then stops (status 173; the bot is
    a participant). bob keeps his identity through a nick change; when alice leaves,
    mallory taking the nick "alice" is an unverified room/alice, not alice@."""
    bot = xmpp_account(prosody, "jarvis")
    bob, alice, mallory = (xmpp_account(prosody, name) for name in ("bob", "alice", "mallory"))
    room = fresh_room("moves")

    async def scenario() -> None:
        owner = await person(prosody, bob, room, "bob")
        await owner.configure(room, whois="anyone")
        first = await person(prosody, alice, room, "alice")
        adapter = XmppAdapter(prosody.xmpp_settings(*bot, rooms=[room]), "jarvis")
        recorder = Recorder()
        await adapter.start(recorder)
        intruder = None
        try:
            async with asyncio.timeout(10):
                while room not in adapter.joined:
                    await asyncio.sleep(0.02)
            first.groupchat(room, "jarvis: status")
            assert (await recorder.next()).identity == alice[0]
            await owner.configure(room, whois="moderators")

            owner.change_nick(room, "robert")
            owner.groupchat(room, "jarvis: status")
            heard = await recorder.next()
            assert (heard.identity, heard.nick, heard.verified) == (bob[0], "robert", True)

            await first.leave(room, "alice")
            intruder = await person(prosody, mallory, room, "alice")
            intruder.groupchat(room, "jarvis: status")
            heard = await recorder.next()
            assert (heard.identity, heard.nick, heard.verified) == (f"{room}/alice", "alice", False)
            assert heard.unverified_reason == hidden(room, "alice")
        finally:
            for client in (owner, first, intruder):
                if client is not None:
                    await client.close()
            await adapter.stop()
    run_within(scenario)
