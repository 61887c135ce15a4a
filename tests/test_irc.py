"""The IRC adapter against a real ngircd, with real ``irc`` library clients as the people."""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import pytest

from bot.irc import IrcAdapter
from clipboard.errors import ConfigError
from tests.aio import Recorder, assert_never_connects, run_within
from tests.servers.ngircd import CHANNEL, IrcClient, Ircd, IrcdFactory

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


async def started(ircd: Ircd, bot_name: str, **settings: Any) -> tuple[IrcAdapter, Recorder]:
    adapter = IrcAdapter(ircd.irc_settings(**settings), bot_name)
    recorder = Recorder()
    await adapter.start(recorder)
    async with asyncio.timeout(10):
        await adapter.connected.wait()
    return adapter, recorder


def test_channel_and_private_messages(ngircd: Ircd) -> None:
    async def scenario() -> None:
        bot = unique("jv")
        alice = await IrcClient(ngircd, unique("alice")).connect(CHANNEL)
        adapter, recorder = await started(ngircd, bot)
        try:
            alice.say(CHANNEL, f"{bot}: status loki")
            heard = await recorder.next()
            assert heard.adapter == "irc"
            assert heard.text == f"{bot}: status loki"
            assert heard.room == CHANNEL and heard.reply_to == CHANNEL
            assert heard.nick == alice.nick
            assert heard.identity == f"{alice.nick}!~{alice.nick}@127.0.0.1"
            adapter.send(heard.reply_to, f"{alice.nick}: loki is UP")
            said = await alice.expect("loki is UP")
            assert (said.nick, said.target) == (bot, CHANNEL)

            alice.say(bot, "history loki")
            private = await recorder.next()
            assert (private.room, private.reply_to, private.text) == (None, alice.nick, "history loki")
            adapter.send(private.reply_to, "no deployments of loki")
            said = await alice.expect("no deployments")
            assert said.target == alice.nick
        finally:
            alice.close()
            await adapter.stop()
    run_within(scenario)


def test_long_answers_arrive_whole_split_under_512_bytes(ngircd: Ircd) -> None:
    async def scenario() -> None:
        bot = unique("jv")
        alice = await IrcClient(ngircd, unique("alice")).connect(CHANNEL)
        adapter, _ = await started(ngircd, bot, rate=100.0, burst=100)
        try:
            unbroken = "é🚀x" * 300                      # 2100 bytes, no space to cut at
            words = " ".join(f"wörd{i}" for i in range(400))  # cut at spaces
            adapter.send(CHANNEL, unbroken + "\n" + words)
            got: list[str] = []
            async with asyncio.timeout(10):
                while "wörd399" not in (got[-1] if got else ""):
                    got.append((await alice.expect()).text)
            assert len(got) > 4
            split_at = next(i for i, line in enumerate(got) if line.startswith("wörd0"))
            assert "".join(got[:split_at]) == unbroken
            assert " ".join(got[split_at:]) == words
            for line in got:
                relayed = f":{bot}!~{bot}@127.0.0.1 PRIVMSG {CHANNEL} :{line}\r\n"
                assert len(relayed.encode()) <= 512
        finally:
            alice.close()
            await adapter.stop()
    run_within(scenario)


def test_nick_collision_fallback_and_nick_regained(ngircd: Ircd) -> None:
    async def scenario() -> None:
        bot = unique("jv")
        squatter = await IrcClient(ngircd, bot).connect(CHANNEL)
        alice = await IrcClient(ngircd, unique("alice")).connect(CHANNEL)
        adapter, recorder = await started(ngircd, bot)
        try:
            assert adapter._conn is not None
            assert adapter._conn.get_nickname() == bot + "_"
            alice.say(CHANNEL, f"{bot}_: status loki")
            heard = await recorder.next()
            assert heard.text == f"{bot}: status loki"   # what the core expects to strip
            squatter.close()
            async with asyncio.timeout(10):
                while adapter._conn.get_nickname() != bot:
                    await asyncio.sleep(0.05)
        finally:
            alice.close()
            squatter.close()
            await adapter.stop()
    run_within(scenario)


def test_rejoins_after_kick_and_holds_lines_meanwhile(ngircd: Ircd) -> None:
    async def scenario() -> None:
        bot = unique("jv")
        channel = "#" + unique("kick")
        op = await IrcClient(ngircd, unique("op")).connect(channel)   # first in: channel operator
        adapter, _ = await started(ngircd, bot, channels=[channel])
        try:
            op.conn.mode(channel, "+i")               # the first rejoin attempts will fail
            op.conn.kick(channel, bot, "out")
            async with asyncio.timeout(5):
                while channel in adapter.joined:
                    await asyncio.sleep(0.005)
            adapter.send(channel, "said while kicked")   # held until the rejoin, not lost
            await asyncio.sleep(1.5)
            assert op.inbox.empty()
            op.conn.mode(channel, "-i")
            said = await op.expect("said while kicked")
            assert said.target == channel
            assert channel in adapter.joined
        finally:
            op.close()
            await adapter.stop()
    run_within(scenario)


def test_nickserv_identify_keeps_the_password_out_of_logs(ngircd: Ircd, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("JARVIS_TEST_NICKSERV", "s3cret-pw")
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        services = await IrcClient(ngircd, unique("services")).connect()
        adapter, _ = await started(ngircd, unique("jv"), nickserv_nick=services.nick,
                                   nickserv_password_env="JARVIS_TEST_NICKSERV")
        try:
            said = await services.expect("IDENTIFY")
            assert said.text == "IDENTIFY s3cret-pw"
        finally:
            services.close()
            await adapter.stop()
    run_within(scenario)
    assert "RAW" in caplog.text            # the library did log raw lines ...
    assert "s3cret-pw" not in caplog.text  # ... but not the one with the password


def test_missing_password_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JARVIS_TEST_EMPTY", raising=False)
    with pytest.raises(ConfigError, match=r"chat.irc.password_env names the environment variable JARVIS_TEST_EMPTY"):
        IrcAdapter({"server": "127.0.0.1", "password_env": "JARVIS_TEST_EMPTY"}, "jarvis")


def test_reconnects_after_server_crash_and_delivers_what_waited(ngircd_factory: IrcdFactory) -> None:
    ircd = ngircd_factory()

    async def scenario() -> None:
        bot = unique("jv")
        adapter, recorder = await started(ircd, bot, reconnect_min_delay=1.0, reconnect_max_delay=2.0)
        alice = await IrcClient(ircd, unique("alice")).connect(CHANNEL)
        try:
            ircd.kill()
            async with asyncio.timeout(5):
                while adapter.connected.is_set():
                    await asyncio.sleep(0.02)
            adapter.send(CHANNEL, "loki: deployment 7 finished")
            adapter.send(CHANNEL, "loki: all 12 steps ok")
            await asyncio.sleep(1.5)                  # a few failed reconnect attempts
            ircd.start()
            restarted = time.monotonic()
            alice = await IrcClient(ircd, alice.nick).connect(CHANNEL)
            first = await alice.expect("deployment 7", timeout=30)
            second = await alice.expect("all 12 steps", timeout=5)
            assert first.nick == second.nick == bot
            assert time.monotonic() - restarted < 30
            alice.say(CHANNEL, f"{bot}: status loki")   # and it listens again
            assert (await recorder.next()).text == f"{bot}: status loki"
        finally:
            alice.close()
            await adapter.stop()
    run_within(scenario, timeout=90)


def test_tls_with_the_server_certificate_verified(ngircd_factory: IrcdFactory) -> None:
    """A TLS-only server: the bot checks its certificate against ``ca_file`` (and the
    address it dialled); without that CA it never connects."""
    ircd = ngircd_factory(tls=True)

    async def scenario() -> None:
        bot = unique("jv")
        adapter, recorder = await started(ircd, bot)
        alice = await IrcClient(ircd, unique("alice")).connect(CHANNEL)
        try:
            assert adapter._conn is not None
            assert adapter._conn.transport.get_extra_info("ssl_object") is not None
            alice.say(CHANNEL, f"{bot}: status loki")
            heard = await recorder.next()
            adapter.send(heard.reply_to, "loki is UP")
            assert (await alice.expect("loki is UP")).nick == bot
        finally:
            alice.close()
            await adapter.stop()
        await assert_never_connects(IrcAdapter(ircd.irc_settings(ca_file=None, connect_timeout=2),
                                               unique("jv")))
    run_within(scenario)
