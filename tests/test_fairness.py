"""Fair answers (jarvis issue 12): the outbox's order (announcements first, people take
turns, a cap on one person's waiting lines), the per-identity command limit, and, against
a real ngircd, a flood of large requests that does not delay a deployment's completion."""
from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import yaml
from slixmpp import JID

from bot.adapter import Incoming
from bot.fairness import CommandLimiter, Verdict, identity_key
from bot.outbox import Outbox, Priority
from clipboard import config as config_mod
from clipboard.errors import ConfigError
from tests.aio import run_within
from tests.servers.ngircd import CHANNEL, IrcClient, IrcdFactory, Said
from tests.servers.prosody import MUC, Prosody, XmppClient
from tests.test_chat import design, running, write_config, xmpp_account


async def drained(box: Outbox, sent: list[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    async with asyncio.timeout(5):
        while len(sent) < count:
            await asyncio.sleep(0.005)
    return sent


def test_announcements_overtake_answers_queued_before_them() -> None:
    async def scenario() -> None:
        sent: list[tuple[str, str]] = []
        box = Outbox("test", lambda t, line: sent.append((t, line)), rate=1000, burst=1000)
        box.put("#ops", [f"help{i}" for i in range(50)], owner="mallory")
        box.put("#ops", ["alice: loki: ready in 4s"], priority=Priority.ANNOUNCE)
        box.put("bob", ["b0"], owner="bob")
        box.put("#ops", ["alice: odin: ready in 5s"], priority=Priority.ANNOUNCE)
        box.start()
        box.online()
        await drained(box, sent, 53)
        assert sent[:2] == [("#ops", "alice: loki: ready in 4s"), ("#ops", "alice: odin: ready in 5s")]
        assert sent[2:4] == [("#ops", "help0"), ("bob", "b0")]      # then owners take turns
        assert [line for _, line in sent[4:]] == [f"help{i}" for i in range(1, 50)]
        await box.stop()
    asyncio.run(scenario())


def test_an_announcement_waits_one_line_at_most_behind_a_paced_flood() -> None:
    """At 20 lines a second, 100 answer lines are 5 s of backlog; the announcement
    put in the middle of it goes out as the very next line."""
    async def scenario() -> None:
        sent: list[tuple[float, str]] = []
        box = Outbox("test", lambda t, line: sent.append((time.monotonic(), line)), rate=20, burst=1)
        box.start()
        box.online()
        box.put("#ops", [f"clipboard{i}" for i in range(100)], owner="mallory")
        await asyncio.sleep(0.5)
        put_at = time.monotonic()
        box.put("#ops", ["loki: ready"], priority=Priority.ANNOUNCE)
        async with asyncio.timeout(2):
            while not any(line == "loki: ready" for _, line in sent):
                await asyncio.sleep(0.005)
        said_at = next(t for t, line in sent if line == "loki: ready")
        assert said_at - put_at < 0.1
        assert box.pending > 80                    # the flood is still waiting, behind it
        await box.stop()
    asyncio.run(scenario())


def test_a_verbose_deployment_does_not_starve_answers() -> None:
    """While both wait, one answer line goes after every two announcement lines: 200
    progress lines do not hold bob's one-line ``status`` for the whole of them."""
    async def scenario() -> None:
        sent: list[tuple[str, str]] = []
        box = Outbox("test", lambda t, line: sent.append((t, line)), rate=1000, burst=1000)
        box.put("#ops", [f"freya: step {i}/200" for i in range(1, 201)], priority=Priority.ANNOUNCE)
        box.put("bob", ["freya: running step 3/200"], owner="bob")
        box.put("#ops", ["alice: a0", "alice: a1"], owner="alice")
        box.start()
        box.online()
        await drained(box, sent, 203)
        lines = [line for _, line in sent]
        assert lines[:7] == ["freya: step 1/200", "freya: step 2/200", "freya: running step 3/200",
                             "freya: step 3/200", "freya: step 4/200", "alice: a0", "freya: step 5/200"]
        assert [line for line in lines if "/200" in line and "running" not in line] == [
            f"freya: step {i}/200" for i in range(1, 201)]
        await box.stop()
    asyncio.run(scenario())


def test_owners_take_turns_on_one_target_and_keep_their_own_order() -> None:
    async def scenario() -> None:
        sent: list[tuple[str, str]] = []
        box = Outbox("test", lambda t, line: sent.append((t, line)), rate=1000, burst=1000)
        box.put("#ops", ["m0", "m1", "m2", "m3"], owner="mallory")
        box.put("mallory", ["mp0"], owner="mallory")                 # private, same person
        box.put("#ops", ["a0", "a1"], owner="alice")
        box.put("#ops", ["c0"], owner="carol")
        box.start()
        box.online()
        await drained(box, sent, 8)
        assert [line for _, line in sent] == ["m0", "a0", "c0", "m1", "a1", "m2", "m3", "mp0"]
        await box.stop()
    asyncio.run(scenario())


def test_a_held_room_does_not_hold_other_peoples_lines() -> None:
    async def scenario() -> None:
        sent: list[tuple[str, str]] = []
        joined: set[str] = set()
        box = Outbox("test", lambda t, line: sent.append((t, line)), rate=1000, burst=1000,
                     ready=lambda t: not t.startswith("#") or t in joined)
        box.put("#ops", ["loki: ready"], priority=Priority.ANNOUNCE)
        box.put("bob", ["b0"], owner="bob")
        box.start()
        box.online()
        await drained(box, sent, 1)
        assert sent == [("bob", "b0")]
        joined.add("#ops")
        box.wake()
        await drained(box, sent, 2)
        assert sent[1] == ("#ops", "loki: ready")
        await box.stop()
    asyncio.run(scenario())


def test_cap_keeps_one_persons_waiting_lines_and_says_once_what_went() -> None:
    box = Outbox("test", lambda t, line: None, rate=1, burst=1)
    box.put("mallory", [f"c{i}" for i in range(10)], owner="mallory", cap=5, lead="m: ")
    assert box.waiting("mallory") == 5
    box.put("mallory", ["more"], owner="mallory", cap=5, lead="m: ")   # full: no second notice
    box.put("#ops", ["m: 12 lines: sent to you privately"], owner="mallory", cap=5, lead="m: ")
    assert box.waiting("mallory") == 5
    assert box.queued("mallory") == ["c0", "c1", "c2", "c3",
                      "m: [6 more lines dropped: 5 lines of yours are already waiting to go out]"]
    box.put("#ops", ["a0"], owner="alice", cap=5)                       # others are not capped by it
    assert box.waiting("alice") == 1


def test_the_overall_limit_drops_answers_not_announcements() -> None:
    box = Outbox("test", lambda t, line: None, rate=1, burst=1, limit=10)
    box.put("#ops", ["loki: deployment #1 started", "loki: ready"], priority=Priority.ANNOUNCE)
    box.put("#ops", [f"h{i}" for i in range(20)], owner="mallory")
    assert box.waiting("#ops", Priority.ANNOUNCE) == 2
    assert box.pending == 10


def test_command_limit_burst_then_one_warning_then_silence_then_again() -> None:
    now = [0.0]
    limiter = CommandLimiter(rate=0.5, burst=3, clock=lambda: now[0])
    verdicts = [limiter.check("irc:mallory!m@h") for _ in range(6)]
    assert verdicts == [Verdict.RUN] * 3 + [Verdict.WARN] + [Verdict.IGNORE] * 2
    assert limiter.check("irc:alice!a@h") is Verdict.RUN               # others are not affected
    now[0] = 2.0                                                        # one token back
    assert limiter.check("irc:mallory!m@h") is Verdict.RUN
    assert limiter.check("irc:mallory!m@h") is Verdict.WARN            # a new flood: told again
    assert "slow down" in limiter.slow_down()


def test_identity_is_the_account_when_the_server_vouched_for_one() -> None:
    said = Incoming(adapter="irc", identity="m!~m@h", text="x", reply_to="#ops", room="#ops",
                    nick="m", account="mallory")
    assert identity_key(said) == "irc:account:mallory"
    assert identity_key(Incoming(adapter="irc", identity="m!~m@h", text="x", reply_to="m")) == "irc:m!~m@h"


def test_fairness_settings_errors_are_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump({"chat": {"fairness": {"command_rate": 0}}}))
    with pytest.raises(ConfigError, match=r"chat\.fairness\.command_rate is 0; it must be more than 0 and at most 1000$"):
        config_mod.load(path, export=False)
    path.write_text(yaml.safe_dump({"chat": {"fairness": {"queue_cap": "lots"}}}))
    with pytest.raises(ConfigError, match="chat.fairness.queue_cap must be int, not str"):
        config_mod.load(path, export=False)


def test_a_flood_of_large_requests_does_not_delay_a_completion(ngircd_factory: IrcdFactory,
                                                               tmp_path: Path) -> None:
    """mallory asks for ``help`` (12 lines) 100 times in #ops while alice's deployment runs;
    the bot paces IRC at its default 1 line a second. bob, also in #ops, sees alice's
    completion line within 5 s of the deployment finishing; mallory's answers went to
    mallory privately, the room heard one line per answer, and mallory was told to slow
    down once. (Before: 1,200 lines in front of the completion, 20 minutes.)"""
    ircd = ngircd_factory()
    path = write_config(tmp_path, {"irc": ircd.irc_settings(rate=1.0, burst=5)})
    loki = design(tmp_path, "loki", sleep=4)

    async def scenario() -> None:
        async with running(path) as jarvis:
            alice = await IrcClient(ircd, "alice").connect(CHANNEL)
            bob = await IrcClient(ircd, "bob").connect(CHANNEL)
            mallory = await IrcClient(ircd, "mallory").connect(CHANNEL)
            try:
                alice.say(CHANNEL, f"jarvis: deploy {loki} pipeline=slow")
                await bob.expect("loki: deployment #")
                for _ in range(100):
                    mallory.say(CHANNEL, "jarvis: help")
                room: list[Said] = []
                async with asyncio.timeout(30):
                    while True:
                        said = await bob.inbox.get()
                        room.append(said)
                        if "loki: ready in" in said.text:
                            arrived = time.time()
                            break
                deployment = await jarvis.store.latest("loki")
                assert deployment is not None and deployment.finished_at is not None
                delay = arrived - deployment.finished_at
                assert delay < 5, f"completion line {delay:.1f}s after the deployment finished"

                texts = [said.text for said in room if said.nick == "jarvis"]
                assert texts[-1].startswith("alice: loki: ready in")
                flood = [t for t in texts[:-1] if t.startswith("mallory: ")]
                assert flood and all(re.fullmatch(r"mallory: \d+ lines: sent to you privately", t)
                                         or t == "mallory: " + jarvis.bot.limiter.slow_down()
                                         for t in flood), flood
                assert sum("slow down" in t for t in flood) <= 1
                private = await mallory.expect(lambda s: s.target == "mallory"
                                               and s.text.startswith("address me as"))
                assert private.nick == "jarvis"
                irc = jarvis.adapter("irc")
                await irc.outbox.stop()               # freeze the queue: count what was said
                await asyncio.sleep(0.5)
                while not bob.inbox.empty():
                    texts.append(bob.inbox.get_nowait().text)
                queued = irc.outbox.queued("irc:mallory!~mallory@127.0.0.1")
                assert len(queued) <= jarvis.bot.fairness.queue_cap
                assert sum("slow down" in t for t in texts + queued) == 1
            finally:
                for person in (alice, bob, mallory):
                    person.close()
    run_within(scenario, timeout=120)


def test_long_room_answers_go_privately_on_jabber(prosody: Prosody, tmp_path: Path) -> None:
    """In a room that shows real JIDs, bob's ``help`` (12 lines) comes as a direct chat to
    his JID; in one that hides them, carol's comes as a private message through the room.
    Each room hears one line saying so, and a short answer stays in the room."""
    bot, bob, carol = (xmpp_account(prosody, name) for name in ("jarvis", "bob", "carol"))
    open_room, hiding_room = f"fairopen@{MUC}", f"fairhidden@{MUC}"
    path = write_config(tmp_path, {"xmpp": prosody.xmpp_settings(*bot, rooms=[open_room, hiding_room])})

    async def scenario() -> None:
        robert = await XmppClient(prosody, *bob).connect()
        await robert.join(open_room, "bob")
        await robert.configure(open_room, whois="anyone")
        caroline = await XmppClient(prosody, *carol).connect()
        await caroline.join(hiding_room, "carol")
        try:
            async with running(path) as jarvis:
                xmpp = jarvis.adapter("xmpp")
                async with asyncio.timeout(10):
                    while xmpp.occupants.real_jid(open_room, "bob") is None:
                        await asyncio.sleep(0.02)
                robert.groupchat(open_room, "jarvis: help")
                note = await robert.expect(lambda h: h.sender == f"{open_room}/jarvis")
                assert re.fullmatch(r"bob: \d+ lines: sent to you privately", note.text)
                direct = await robert.expect(lambda h: h.kind == "chat")
                assert JID(direct.sender).bare == bot[0]
                assert direct.text.startswith("address me as 'jarvis: <command>'")
                assert note.text.startswith(f"bob: {len(direct.text.splitlines())} lines")

                caroline.groupchat(hiding_room, "jarvis: help")
                note = await caroline.expect(lambda h: h.sender == f"{hiding_room}/jarvis")
                assert re.fullmatch(r"carol: \d+ lines: sent to you privately", note.text)
                private = await caroline.expect(lambda h: h.kind == "chat")
                assert private.sender == f"{hiding_room}/jarvis"
                assert private.text.splitlines()[0].startswith("address me as")

                caroline.groupchat(hiding_room, "jarvis: status loki")
                short = await caroline.expect(lambda h: h.sender == f"{hiding_room}/jarvis")
                assert short.text == "carol: loki: never deployed"
        finally:
            await robert.close()
            await caroline.close()
    run_within(scenario, timeout=60)
